"""DeliveryWorker against a scripted in-memory exporter: ack, bisect, split, backoff, 401, flush."""

import logging
import threading
import time
from collections import deque

import pytest

from collector.delivery.outbox import Outbox
from collector.delivery.retry import BatchConfig, RetryConfig
from collector.delivery.worker import DeliveryWorker
from collector.events import encode_event
from collector.exporters import Rejected, RetryLater, TooLarge, Unauthorized
from collector.metrics import Metrics


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ScriptedExporter:
    """Answers from a script first (an exception to raise, or None for success), then by rule:
    a batch holding a bad uuid is Rejected, one over max_batch_events is TooLarge."""

    def __init__(self, *, bad_uuids=(), too_large_uuids=(), max_batch_events=None, script=()):
        self.bad_uuids = set(bad_uuids)
        self.too_large_uuids = set(too_large_uuids)
        self.max_batch_events = max_batch_events
        self.script = deque(script)
        self.calls: list[list[str]] = []
        self.delivered: list[dict] = []
        self.shut_down = False
        self._lock = threading.Lock()

    def export(self, batch):
        with self._lock:
            self.calls.append([event["uuid"] for event in batch])
            if self.script:
                answer = self.script.popleft()
                if answer is not None:
                    raise answer
            elif any(event["uuid"] in self.bad_uuids for event in batch):
                raise Rejected("HTTP 400: invalid uuid")
            elif any(event["uuid"] in self.too_large_uuids for event in batch):
                raise TooLarge("HTTP 413: event too big")
            elif self.max_batch_events is not None and len(batch) > self.max_batch_events:
                raise TooLarge("HTTP 413: request too large")
            self.delivered += batch

    def shutdown(self):
        self.shut_down = True


def event(n: int, padding: str = "") -> dict:
    return {
        "event": "file_uploaded",
        "distinct_id": f"user-{n % 7}",
        "properties": {"n": n, "padding": padding},
        "timestamp": "2027-01-15T07:59:00+00:00",
        "uuid": f"00000000-0000-4000-8000-{n:012d}",
    }


def wait_until(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within the deadline")
        time.sleep(0.005)


NO_JITTER = RetryConfig(initial_interval_s=1, max_interval_s=60, multiplier=2, jitter=0)
EAGER = BatchConfig(max_events=50, max_delay_s=0)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def outbox(tmp_path, clock):
    box = Outbox(tmp_path / "outbox.db", clock=clock)
    yield box
    box.close()


@pytest.fixture
def run_worker(outbox, clock):
    workers = []

    def start(exporter, *, retry=NO_JITTER, batch=EAGER, metrics=None):
        worker = DeliveryWorker(
            outbox,
            exporter,
            retry=retry,
            batch=batch,
            metrics=metrics or Metrics(),
            clock=clock,
            random=lambda: 0.5,
            idle_poll_s=0.01,
        )
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.shutdown(timeout_s=2)


def uuids(events):
    return sorted(e["uuid"] for e in events)


def test_delivers_everything_once_in_bounded_batches(outbox, run_worker):
    exporter = ScriptedExporter()
    metrics = Metrics()
    outbox.put([event(n) for n in range(120)])
    worker = run_worker(exporter, metrics=metrics)
    assert worker.force_flush(timeout_s=10)
    assert uuids(exporter.delivered) == uuids(event(n) for n in range(120))
    assert [len(call) for call in exporter.calls] == [50, 50, 20]
    assert outbox.depth() == 0 and outbox.dead_letters() == []
    assert metrics.value("delivered_events_total") == 120
    wait_until(lambda: metrics.value("outbox_depth") == 0)  # the gauge follows the ack
    assert metrics.value("delivery_lag_seconds") == 60  # the fake clock reads 08:00:00


def test_batches_are_bounded_by_bytes(outbox, run_worker):
    exporter = ScriptedExporter()
    outbox.put([event(n, padding="x" * 10_000) for n in range(20)])
    worker = run_worker(
        exporter, batch=BatchConfig(max_events=50, max_bytes=50_000, max_event_bytes=20_000, max_delay_s=0)
    )
    assert worker.force_flush(timeout_s=10)
    assert len(exporter.delivered) == 20
    assert max(len(call) for call in exporter.calls) == 4  # 4 x ~10 KB fit in 50 KB, 5 do not


def test_wake_delivers_new_puts(outbox, run_worker):
    exporter = ScriptedExporter()
    worker = run_worker(exporter)
    outbox.put([event(1)])
    worker.wake()
    wait_until(lambda: len(exporter.delivered) == 1)


def test_bisect_dead_letters_exactly_the_bad_events(outbox, run_worker):
    bad = {event(n)["uuid"] for n in (3, 17, 40)}
    exporter = ScriptedExporter(bad_uuids=bad)
    metrics = Metrics()
    outbox.put([event(n) for n in range(50)])
    worker = run_worker(exporter, metrics=metrics)
    assert worker.force_flush(timeout_s=10)
    good = [event(n)["uuid"] for n in range(50) if event(n)["uuid"] not in bad]
    assert uuids(exporter.delivered) == sorted(good)  # each good event exactly once
    letters = outbox.dead_letters()
    assert sorted(d["uuid"] for d in letters) == sorted(bad)
    assert {d["reason"] for d in letters} == {"HTTP 400: invalid uuid"}
    assert metrics.value("dead_lettered_events_total", reason="rejected") == 3
    assert outbox.depth() == 0


def test_413_splits_until_batches_fit(outbox, run_worker):
    exporter = ScriptedExporter(max_batch_events=7)
    outbox.put([event(n) for n in range(50)])
    worker = run_worker(exporter)
    assert worker.force_flush(timeout_s=10)
    assert uuids(exporter.delivered) == uuids(event(n) for n in range(50))
    assert outbox.dead_letters() == []


def test_413_on_a_single_event_dead_letters_it(outbox, run_worker):
    exporter = ScriptedExporter(too_large_uuids={event(5)["uuid"]})
    metrics = Metrics()
    outbox.put([event(n) for n in range(10)])
    worker = run_worker(exporter, metrics=metrics)
    assert worker.force_flush(timeout_s=10)
    assert len(exporter.delivered) == 9
    assert [(d["uuid"], d["reason"]) for d in outbox.dead_letters()] == [(event(5)["uuid"], "HTTP 413: event too big")]
    assert metrics.value("dead_lettered_events_total", reason="too_large") == 1


def test_oversized_event_is_dead_lettered_before_sending(outbox, run_worker):
    exporter = ScriptedExporter()
    big = event(99, padding="x" * 2_000)
    outbox.put([event(1), big, event(2)])
    worker = run_worker(exporter, batch=BatchConfig(max_events=50, max_event_bytes=1_000, max_delay_s=0))
    assert worker.force_flush(timeout_s=10)
    assert all(big["uuid"] not in call for call in exporter.calls)
    assert uuids(exporter.delivered) == uuids([event(1), event(2)])
    (letter,) = outbox.dead_letters()
    assert letter["uuid"] == big["uuid"]
    assert "over max_event_bytes 1000" in letter["reason"]


def test_retry_after_is_honoured(outbox, run_worker, clock):
    exporter = ScriptedExporter(script=[RetryLater("HTTP 429: slow down", retry_after_s=30)])
    metrics = Metrics()
    outbox.put([event(n) for n in range(5)])
    t0 = clock.now
    run_worker(exporter, metrics=metrics)
    wait_until(lambda: outbox.next_due_at() == t0 + 30)  # not the 1 s backoff: Retry-After wins
    assert len(exporter.calls) == 1 and exporter.delivered == []
    assert outbox.depth() == 5
    wait_until(lambda: metrics.value("retried_batches_total") == 1)  # counted right after the nack
    assert metrics.value("export_errors_total", kind="retry_later") == 1
    clock.now = t0 + 30
    wait_until(lambda: len(exporter.delivered) == 5)
    assert len(exporter.calls) == 2


def test_backoff_grows_exponentially_then_resets(outbox, run_worker, clock):
    failures = [RetryLater("HTTP 503") for _ in range(4)]
    exporter = ScriptedExporter(script=failures)
    outbox.put([event(1)])
    run_worker(exporter)
    delays = []
    for attempt in range(1, 5):
        wait_until(
            lambda attempt=attempt: (
                len(exporter.calls) == attempt and outbox.next_due_at() is not None and outbox.next_due_at() > clock.now
            )
        )
        delay = outbox.next_due_at() - clock.now
        delays.append(delay)
        clock.now += delay
    assert delays == [1, 2, 4, 8]
    wait_until(lambda: len(exporter.delivered) == 1)


def test_unauthorized_keeps_everything_and_says_so(outbox, run_worker, clock, caplog):
    exporter = ScriptedExporter(script=[Unauthorized("HTTP 401: invalid API key")])
    metrics = Metrics()
    outbox.put([event(n) for n in range(30)])
    t0 = clock.now
    with caplog.at_level(logging.ERROR, logger="collector.delivery.worker"):
        run_worker(exporter, metrics=metrics)
        wait_until(lambda: outbox.next_due_at() == t0 + 300)
        wait_until(lambda: metrics.value("retried_batches_total") == 1)  # counted and logged after the nack
    assert outbox.depth() == 30 and outbox.dead_letters() == []
    assert metrics.value("export_errors_total", kind="unauthorized") == 1
    assert any("rejected the API key" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    clock.now = t0 + 300
    wait_until(lambda: len(exporter.delivered) == 30)


def test_retry_during_bisect_keeps_the_unsent_parts(outbox, run_worker, clock):
    bad = event(0)["uuid"]
    # the first answer bisects; the first half fails transiently: both halves must stay queued
    exporter = ScriptedExporter(bad_uuids={bad}, script=[Rejected("HTTP 400: bad"), RetryLater("HTTP 502")])
    outbox.put([event(n) for n in range(8)])
    t0 = clock.now
    run_worker(exporter)
    wait_until(lambda: outbox.next_due_at() == t0 + 1)
    assert outbox.depth() == 8
    clock.now = t0 + 1
    wait_until(lambda: len(exporter.delivered) == 7 and outbox.depth() == 0)
    assert [d["uuid"] for d in outbox.dead_letters()] == [bad]


def test_max_elapsed_time_gives_up_on_old_events_only(outbox, run_worker, clock):
    outbox.put([event(1)])
    clock.now += 100
    outbox.put([event(2)])
    exporter = ScriptedExporter(script=[RetryLater("HTTP 503")])
    metrics = Metrics()
    run_worker(exporter, retry=RetryConfig(jitter=0, max_elapsed_time_s=50), metrics=metrics)
    wait_until(lambda: outbox.dead_letter_count() == 1)
    assert outbox.dead_letters()[0]["uuid"] == event(1)["uuid"]
    assert "max_elapsed_time_s=50" in outbox.dead_letters()[0]["reason"]
    wait_until(lambda: metrics.value("dead_lettered_events_total", reason="expired") == 1)
    clock.now += 1
    wait_until(lambda: uuids(exporter.delivered) == uuids([event(2)]))


def test_unclassified_exporter_error_keeps_the_events(outbox, run_worker, clock):
    exporter = ScriptedExporter(script=[ValueError("bug")])
    outbox.put([event(1)])
    t0 = clock.now
    run_worker(exporter)
    wait_until(lambda: outbox.next_due_at() == t0 + 1)
    clock.now = t0 + 1
    wait_until(lambda: len(exporter.delivered) == 1)


def test_force_flush_fails_fast_when_backing_off_past_the_deadline(outbox, run_worker):
    exporter = ScriptedExporter(script=[RetryLater("HTTP 429", retry_after_s=3600)])
    outbox.put([event(1)])
    worker = run_worker(exporter)
    wait_until(lambda: len(exporter.calls) == 1)
    wait_until(lambda: outbox.next_due_at() is not None)
    started = time.monotonic()
    assert worker.force_flush(timeout_s=60) is False
    assert time.monotonic() - started < 30  # it did not sit out the deadline


def test_shutdown_leaves_undelivered_rows_and_shuts_the_exporter(outbox, clock, tmp_path):
    exporter = ScriptedExporter(script=[RetryLater("HTTP 503", retry_after_s=3600)])
    outbox.put([event(n) for n in range(3)])
    worker = DeliveryWorker(
        outbox, exporter, retry=NO_JITTER, batch=EAGER, metrics=Metrics(), clock=clock, idle_poll_s=0.01
    )
    worker.start()
    # one read per poll: the worker may claim the rows between two reads (next_due_at is None then)
    wait_until(lambda: (due_at := outbox.next_due_at()) is not None and due_at > clock.now)
    worker.shutdown(timeout_s=1)
    assert exporter.shut_down
    assert outbox.depth() == 3


def test_the_worker_checkpoints_the_wal(outbox, run_worker, monkeypatch):
    """The writer never checkpoints (a receiver's commit would pay for it): the worker does, about once a second."""
    calls = []
    checkpoint = outbox.checkpoint
    monkeypatch.setattr(outbox, "checkpoint", lambda: calls.append(1) or checkpoint())
    outbox.put([event(n) for n in range(10)])
    worker = run_worker(ScriptedExporter())
    assert worker.force_flush(timeout_s=10)
    wait_until(lambda: len(calls) >= 1, timeout_s=10)
    assert outbox.depth() == 0


class DecodingExporter(ScriptedExporter):
    """Reads every event as the local store does: an event that cannot be decoded fails the batch."""

    def export(self, batch):
        for item in batch:
            (item["event"], item["distinct_id"], item["timestamp"], item.get("properties"))
        super().export(batch)


def test_an_undecodable_event_is_dead_lettered_and_the_rest_delivered(outbox, run_worker, tmp_path):
    import sqlite3

    outbox.put([event(n) for n in range(4)])  # one row: its lines are edited
    lines = [encode_event(event(n)).encode() for n in range(4)]
    lines[1] = b'{"e":"\x80\xff"}'  # valid JSON to SQLite, not UTF-8 to Python
    lines[2] = b'{"distinct_id": "u"}'  # an object missing its event name
    other = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
    try:
        other.execute("UPDATE outbox_rows SET payload = CAST(? AS TEXT)", (b"\n".join(lines),))
    finally:
        other.close()
    exporter = DecodingExporter()
    metrics = Metrics()
    worker = run_worker(exporter, metrics=metrics)
    assert worker.force_flush(timeout_s=10)
    assert uuids(exporter.delivered) == uuids([event(0), event(3)])
    letters = {letter["uuid"]: letter["reason"] for letter in outbox.dead_letters()}
    assert sorted(letters) == uuids([event(1), event(2)])
    assert all(reason.startswith("corrupt outbox row: ") for reason in letters.values())
    assert metrics.value("dead_lettered_events_total", reason="corrupt") == 2
    assert metrics.value("retried_batches_total") == 0  # nothing waited for a backoff


def test_dead_letters_held_and_dropped_are_in_the_metrics(tmp_path, clock):
    box = Outbox(tmp_path / "bounded.db", clock=clock, dead_letter_max_rows=2)
    metrics = Metrics()
    worker = DeliveryWorker(
        box, ScriptedExporter(bad_uuids=[event(n)["uuid"] for n in range(5)]), batch=EAGER, metrics=metrics, clock=clock
    )
    try:
        box.put([event(n) for n in range(5)])
        worker.start()
        assert worker.force_flush(timeout_s=10)
        worker.refresh_gauges()
        assert (metrics.value("dead_letters"), metrics.value("dead_letters_dropped_total")) == (2, 3)
        assert metrics.value("dead_lettered_events_total", reason="rejected") == 5
        text = metrics.render()
        assert "# TYPE phonoglyph_collector_dead_letters gauge" in text
        assert "# HELP phonoglyph_collector_dead_letters_dropped_total " in text
    finally:
        worker.shutdown(timeout_s=2)
        box.close()


def test_the_delivery_lag_is_the_oldest_readable_timestamps(outbox, run_worker):
    exporter = ScriptedExporter()
    metrics = Metrics()
    stamps = ["2027-01-15T07:58:00Z", "2027-01-15T07:50:00.500000+00:00", "not a time", None, 12, ["a"]]
    outbox.put([{**event(n), "timestamp": stamp} for n, stamp in enumerate(stamps * 3)])
    worker = run_worker(exporter, metrics=metrics)
    assert worker.force_flush(timeout_s=10)
    assert metrics.value("delivered_events_total") == 18
    assert metrics.value("delivery_lag_seconds") == 599.5  # from 07:50:00.5 to the fake clock's 08:00:00
