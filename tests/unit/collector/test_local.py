import pytest

from collector.exporters import RetryLater
from collector.exporters.local import FunnelStep, LocalStoreExporter, funnel


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


def journey_event(name: str, user: str, timestamp: str) -> dict:
    return {"event": name, "distinct_id": user, "timestamp": timestamp, "properties": {}}


JOURNEY_EVENTS = [
    journey_event("user_signed_up", "u1", "2026-11-28T10:00:00Z"),
    journey_event("user_signed_up", "u2", "2026-11-28T10:00:01Z"),
    journey_event("user_signed_up", "u3", "2026-11-28T10:00:02Z"),
    journey_event("file_uploaded", "u1", "2026-11-28T10:01:00Z"),
    journey_event("file_uploaded", "u2", "2026-11-28T10:01:00Z"),
    journey_event("file_uploaded", "u4", "2026-11-28T10:01:00Z"),  # never signed up: not in the funnel
    journey_event("stem_separation_completed", "u1", "2026-11-28T10:02:00Z"),
    journey_event("stem_separation_completed", "u2", "2026-11-28T09:00:00Z"),
    journey_event("stem_separation_failed", "u3", "2026-11-28T10:02:00Z"),
    journey_event("credits_purchased", "u1", "2026-11-28T10:04:00Z"),
]


@pytest.mark.parametrize("order", ["as given", "reversed"])
def test_funnel_counts_distinct_ids_in_order_whatever_the_order_of_events(order):
    events = JOURNEY_EVENTS if order == "as given" else JOURNEY_EVENTS[::-1]
    steps = funnel(events, ["user_signed_up", "file_uploaded", "stem_separation_completed", "credits_purchased"])
    # u2's stems completed before it uploaded (clock order), so it stops at file_uploaded.
    assert steps == [
        FunnelStep("user_signed_up", 3, 1.0, 1.0),
        FunnelStep("file_uploaded", 2, 2 / 3, 2 / 3),
        FunnelStep("stem_separation_completed", 1, 1 / 3, 1 / 2),
        FunnelStep("credits_purchased", 1, 1 / 3, 1.0),
    ]


def test_funnel_takes_the_earliest_event_at_or_after_the_previous_step():
    events = [
        journey_event("signup", "alice", "2026-11-28T04:00:05Z"),
        journey_event("signup", "alice", "2026-11-28T04:00:01Z"),
        journey_event("upload", "alice", "2026-11-28T04:00:03Z"),  # after the first signup only
        journey_event("render", "alice", "2026-11-28T04:00:03Z"),  # same instant as the upload: counts
    ]
    assert [step.count for step in funnel(events, ["signup", "upload", "render"])] == [1, 1, 1]


def test_funnel_of_no_events_is_all_zero_and_needs_a_step():
    assert funnel([], ["user_signed_up", "file_uploaded"]) == [
        FunnelStep("user_signed_up", 0, 0.0, 0.0),
        FunnelStep("file_uploaded", 0, 0.0, 0.0),
    ]
    with pytest.raises(ValueError):
        funnel(JOURNEY_EVENTS, [])


def test_storage_failure_is_retry_later(store):
    store.shutdown()
    with pytest.raises(RetryLater):
        store.export([event("u-1", "a", "d1", 1)])
