import pytest

from collector.exporters import RetryLater
from collector.exporters.local import FunnelStep, LocalStoreExporter


def event(uuid: str, name: str, distinct_id: str, second: int) -> dict:
    return {
        "uuid": uuid,
        "event": name,
        "distinct_id": distinct_id,
        "timestamp": f"2026-11-28T04:00:{second:02d}.000000Z",
        "properties": {"n": second},
    }


@pytest.fixture
def store(tmp_path):
    exporter = LocalStoreExporter(tmp_path / "events.db", clock=lambda: 1000.0)
    yield exporter
    exporter.shutdown()


def test_export_is_idempotent_by_uuid_and_reads_in_arrival_order(store):
    store.export([event("u-1", "a", "d1", 5), event("u-2", "b", "d1", 1)])
    store.export([event("u-1", "a", "d1", 5), event("u-3", "a", "d2", 2)])
    events = store.read_events()
    assert [(e["seq"], e["uuid"]) for e in events] == [(1, "u-1"), (2, "u-2"), (3, "u-3")]
    assert events[0]["properties"] == {"n": 5}
    assert [e["uuid"] for e in store.read_events(after_seq=2)] == ["u-3"]
    assert [e["uuid"] for e in store.read_events(event="a", limit=1)] == ["u-1"]
    assert store.event_counts() == {"a": 2, "b": 1}


def test_funnel_follows_timestamps_not_arrival(store):
    store.export(
        [
            event("1", "signup", "alice", 1),
            event("2", "upload", "alice", 3),
            event("3", "render", "alice", 2),
            event("4", "render", "alice", 9),  # alice renders after uploading: reaches 3
            event("5", "signup", "bob", 1),
            event("6", "render", "bob", 2),  # bob skips upload
            event("7", "upload", "carol", 1),
            event("8", "signup", "carol", 4),  # carol uploads first
        ]
    )
    assert store.funnel(["signup", "upload", "render"]) == [
        FunnelStep("signup", 3, 1.0, 1.0),
        FunnelStep("upload", 1, 1 / 3, 1 / 3),
        FunnelStep("render", 1, 1 / 3, 1.0),
    ]
    assert store.funnel(["nothing", "signup"]) == [
        FunnelStep("nothing", 0, 0.0, 0.0),
        FunnelStep("signup", 0, 0.0, 0.0),
    ]
    with pytest.raises(ValueError):
        store.funnel([])


def test_storage_failure_is_retry_later(store):
    store.shutdown()
    with pytest.raises(RetryLater):
        store.export([event("u-1", "a", "d1", 1)])
