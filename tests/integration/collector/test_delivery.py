"""Outbox -> DeliveryWorker -> PostHogExporter -> strict fake PostHog, through scripted failures.

Every valid event reaches PostHog (unique uuids == events queued), duplicates only as identical
copies of a uuid, and only the invalid events end up dead-lettered, each with its reason.
"""

import logging
import threading
import uuid
from collections import defaultdict

import pytest

from collector.delivery.outbox import Outbox
from collector.delivery.retry import BatchConfig, RetryConfig
from collector.delivery.worker import DeliveryWorker
from collector.exporters.posthog import PostHogExporter
from collector.metrics import Metrics
from tests.fakes.posthog import Answer

pytestmark = pytest.mark.integration

FAST_RETRY = RetryConfig(initial_interval_s=0.01, max_interval_s=0.05, jitter=0.2, unauthorized_interval_s=0.05)
BATCH = BatchConfig(max_events=100, max_delay_s=0.01)


def event(n: int, **overrides) -> dict:
    base = {
        "event": "render_started",
        "distinct_id": f"user-{n % 13}",
        "properties": {"n": n, "$ignore_sent_at": True},
        "timestamp": "2026-11-28T04:00:00+00:00",
        "uuid": str(uuid.UUID(int=n + 1, version=4)),
    }
    base.update(overrides)
    return base


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "data" / "outbox.db")
    try:
        yield box
    finally:
        box.close()


def start_worker(outbox, posthog, api_key="phc_test", metrics=None):
    worker = DeliveryWorker(
        outbox,
        PostHogExporter(api_key, host=posthog.host, timeout_s=5),
        retry=FAST_RETRY,
        batch=BATCH,
        metrics=metrics or Metrics(),
        idle_poll_s=0.02,
    )
    worker.start()
    return worker


def assert_duplicates_identical(events):
    copies = defaultdict(list)
    for e in events:
        copies[e["uuid"]].append(e)
    for same in copies.values():
        assert all(copy == same[0] for copy in same)


def test_every_valid_event_is_delivered_through_failures(outbox, posthog):
    posthog.script(503, Answer(429, {"Retry-After": "0.2"}), "drop", 500, 401, "partial", 502, 408)
    invalid = {7: {"timestamp": "not a time"}, 250: {"distinct_id": ""}, 613: {"event": ""}, 998: {"properties": [1]}}
    events = [event(n, **invalid.get(n, {})) for n in range(1_000)]
    oversized = event(5_000, properties={"blob": "x" * (950 * 2**10)})  # over max_event_bytes 900 KiB
    metrics = Metrics()
    worker = start_worker(outbox, posthog, metrics=metrics)
    try:

        def produce(chunk):
            for start in range(0, len(chunk), 50):
                outbox.put(chunk[start : start + 50])
                worker.wake()

        producers = [threading.Thread(target=produce, args=(events[k::2],)) for k in range(2)]
        for producer in producers:
            producer.start()
        outbox.put([oversized])
        for producer in producers:
            producer.join()
        assert worker.force_flush(timeout_s=60)
    finally:
        worker.shutdown(timeout_s=5)

    valid = {e["uuid"] for n, e in enumerate(events) if n not in invalid}
    assert set(posthog.uuids()) == valid
    assert_duplicates_identical(posthog.events)
    assert posthog.pending_answers() == 0  # every scripted failure was met
    letters = {d["uuid"]: d["reason"] for d in outbox.dead_letters()}
    assert set(letters) == {events[n]["uuid"] for n in invalid} | {oversized["uuid"]}
    assert "invalid timestamp" in letters[events[7]["uuid"]]
    assert "missing distinct_id" in letters[events[250]["uuid"]]
    assert "over max_event_bytes" in letters[oversized["uuid"]]
    assert outbox.depth() == 0
    assert metrics.value("dead_lettered_events_total", reason="rejected") == 4
    assert metrics.value("dead_lettered_events_total", reason="too_large") == 1
    assert metrics.value("delivered_events_total") >= len(valid)
    assert metrics.value("export_errors_total", kind="unauthorized") == 1
    assert metrics.value("retried_batches_total") >= 7


def test_a_rejected_key_keeps_everything_until_it_is_fixed(outbox, posthog, caplog):
    outbox.put([event(n) for n in range(40)])
    metrics = Metrics()
    with caplog.at_level(logging.ERROR, logger="collector.delivery.worker"):
        worker = start_worker(outbox, posthog, api_key="phc_revoked", metrics=metrics)
        try:
            assert worker.force_flush(timeout_s=0.5) is False
        finally:
            worker.shutdown(timeout_s=1)
    assert outbox.depth() == 40 and outbox.dead_letters() == []
    assert posthog.events == []
    assert metrics.value("export_errors_total", kind="unauthorized") >= 1
    assert any("rejected the API key" in r.getMessage() for r in caplog.records)

    fixed = start_worker(outbox, posthog)  # the operator fixes POSTHOG_API_KEY and restarts
    try:
        assert fixed.force_flush(timeout_s=30)
    finally:
        fixed.shutdown(timeout_s=5)
    assert sorted(posthog.uuids()) == sorted(event(n)["uuid"] for n in range(40))
