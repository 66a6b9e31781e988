"""DeliveryWorker: one thread draining the outbox into an exporter (the Collector's exporterhelper).

claim (whole outbox rows) -> export in batches of at most max_events and max_bytes -> ack on
success; RetryLater -> nack with backoff (the whole worker waits, at least Retry-After);
Rejected (400) -> bisect, dead-letter only single bad events; TooLarge (413) -> split;
Unauthorized (401/403) -> keep everything, retry at the slow interval, log an ERROR each time.
Every wait is on a threading.Event: wake() (new events), force_flush() and shutdown() cut it
short. Rows claimed when the process dies are claimed again when the outbox is opened again.

An exporter error of no known kind keeps the batch for a retry, unless the batch holds an event
that cannot be decoded (a corrupt outbox row): those are dead-lettered (reason ``corrupt``) and the
rest is sent at once, so one bad row never holds the others back.
"""

from __future__ import annotations

import logging
import random as _random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from collector.delivery.outbox import Outbox, OutboxError
from collector.delivery.retry import BatchConfig, RetryConfig, expiry_cutoff, next_delay
from collector.events import encode_event_bytes
from collector.exporters import Exporter, Rejected, RetryLater, TooLarge, Unauthorized
from collector.metrics import Metrics

__all__ = ["DeliveryWorker"]

logger = logging.getLogger(__name__)

_STORAGE_RETRY_S = 1.0
# WAL checkpoints at most this often: pages rewritten by several batches are copied once
_CHECKPOINT_INTERVAL_S = 1.0


class DeliveryWorker:
    def __init__(
        self,
        outbox: Outbox,
        exporter: Exporter,
        *,
        retry: RetryConfig = RetryConfig(),
        batch: BatchConfig = BatchConfig(),
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
        idle_poll_s: float = 1.0,
    ) -> None:
        self._outbox = outbox
        self._exporter = exporter
        self._retry = retry
        self._batch = batch
        self._metrics = metrics
        self._clock = clock
        self._random = random
        self._idle_poll_s = idle_poll_s
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._progress = threading.Condition()
        self._flushes_waiting = 0
        self._failures = 0  # consecutive retryable failures: the backoff exponent
        self._resume_at = 0.0  # wall-clock time before which nothing is sent (backoff)
        self._busy = False  # between a claim and the end of its delivery
        self._checkpointed_at = time.monotonic()
        self._dead_letters_dropped = 0  # the outbox's counters already added to the metrics
        self._corrupt_rows = 0
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("DeliveryWorker already started")
        self._thread = threading.Thread(target=self._run, name="phonoglyph-delivery", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """New events are in the outbox (cheap: call it after every put)."""
        self._wake.set()

    def force_flush(self, timeout_s: float) -> bool:
        """Deliver what is queued; True when the outbox is empty (delivered or dead-lettered).

        Backoff is honoured: when the next attempt is due after the deadline, this returns
        False at once.
        """
        deadline = time.monotonic() + timeout_s
        with self._progress:
            self._flushes_waiting += 1
        self._wake.set()
        try:
            while True:
                if self._outbox.depth() == 0 and not self._busy:
                    return True
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0 or self._resume_at - self._clock() > remaining_s:
                    return False
                with self._progress:
                    self._progress.wait(min(remaining_s, 0.1))
        finally:
            with self._progress:
                self._flushes_waiting -= 1

    def shutdown(self, timeout_s: float) -> None:
        """Flush within the deadline, stop the thread, shut the exporter down.

        What is not delivered stays in the outbox (a batch still being exported when the
        deadline passes returns to pending at the next start).
        """
        deadline = time.monotonic() + timeout_s
        if self._thread is not None:
            self.force_flush(timeout_s)
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                logger.warning("delivery worker still exporting at shutdown; its batch stays in the outbox")
                return
        self._exporter.shutdown()

    # -- the loop ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._step()
            except OutboxError as exc:
                logger.error("outbox error in delivery, retrying in %.0f s: %s", _STORAGE_RETRY_S, exc)
                self._metrics.inc("export_errors_total", kind="outbox")
                self._stopping.wait(_STORAGE_RETRY_S)
            except Exception:  # a bug must not stop delivery for good
                logger.exception("delivery step failed, retrying in %.0f s", _STORAGE_RETRY_S)
                self._metrics.inc("export_errors_total", kind="unexpected")
                self._stopping.wait(_STORAGE_RETRY_S)
            finally:
                with self._progress:
                    self._progress.notify_all()

    def _step(self) -> None:
        backoff_s = self._resume_at - self._clock()
        if backoff_s > 0:
            # in slices of idle_poll_s, so the gauges stay fresh during a long backoff
            self._stopping.wait(min(backoff_s, self._idle_poll_s))
            self._checkpoint()  # puts go on during a backoff: keep the WAL bounded
            self.refresh_gauges()
            return
        self._busy = True  # force_flush waits for the metrics of a batch, not only its ack
        try:
            batch = self._outbox.claim(max_events=self._batch.max_events, max_bytes=self._batch.max_bytes)
            if batch:
                self._deliver(batch)
            self._checkpoint()  # here, not inside a receiver's commit
            self.refresh_gauges()
        finally:
            self._busy = False
        if not batch:
            self._wait_for_work()

    def _checkpoint(self) -> None:
        now = time.monotonic()
        if now - self._checkpointed_at >= _CHECKPOINT_INTERVAL_S:
            self._checkpointed_at = now
            self._outbox.checkpoint()

    def _wait_for_work(self) -> None:
        next_due_at = self._outbox.next_due_at()
        timeout_s = self._idle_poll_s
        if next_due_at is not None:
            timeout_s = min(timeout_s, max(0.0, next_due_at - self._clock()))
        woken = self._wake.wait(timeout_s)
        self._wake.clear()
        # let a partial batch fill a little: fewer, fuller requests
        if (
            woken
            and not self._flushes_waiting
            and self._batch.max_delay_s > 0
            and self._outbox.depth() < self._batch.max_events
        ):
            self._stopping.wait(self._batch.max_delay_s)

    # -- one batch ---------------------------------------------------------------------

    def _deliver(self, batch: Sequence[Mapping[str, Any]]) -> None:
        sendable = []
        for event in batch:
            size = _size_bytes(event)
            if size > self._batch.max_event_bytes:
                self._dead_letter(
                    [event],
                    kind="too_large",
                    reason=f"event is {size} bytes, over max_event_bytes {self._batch.max_event_bytes}",
                )
            else:
                sendable.append(event)
        parts = deque(_parts(sendable, max_events=self._batch.max_events, max_bytes=self._batch.max_bytes))
        while parts:
            part = parts.popleft()
            try:
                self._exporter.export(part)
            except (Rejected, TooLarge) as exc:
                kind = "rejected" if isinstance(exc, Rejected) else "too_large"
                self._metrics.inc("export_errors_total", kind=kind)
                if len(part) == 1:
                    self._dead_letter(part, kind=kind, reason=str(exc))
                else:
                    middle = len(part) // 2
                    parts.extendleft([part[middle:], part[:middle]])
            except Unauthorized as exc:
                self._retry_later([part, *parts], exc, unauthorized=True)
                return
            except RetryLater as exc:
                self._retry_later([part, *parts], exc, retry_after_s=exc.retry_after_s)
                return
            except OutboxError:
                raise
            except Exception as exc:  # an exporter bug, or an event it cannot read
                corrupt = [(event, problem) for event in part if (problem := _corrupt(event))]
                if corrupt:
                    for event, problem in corrupt:
                        self._dead_letter([event], kind="corrupt", reason=f"corrupt outbox row: {problem}")
                    bad = {id(event) for event, _ in corrupt}
                    rest = [event for event in part if id(event) not in bad]
                    if rest:
                        parts.appendleft(rest)
                    continue
                logger.exception("exporter raised an unclassified error")
                self._retry_later([part, *parts], exc, kind="unexpected")
                return
            else:
                self._outbox.ack(event["uuid"] for event in part)
                self._failures = 0
                self._metrics.inc("delivered_events_total", len(part))
                lag_s = self._lag_s(part)
                if lag_s is not None:
                    self._metrics.set("delivery_lag_seconds", lag_s)

    def _dead_letter(self, events: Sequence[Mapping[str, Any]], *, kind: str, reason: str) -> None:
        count = self._outbox.dead_letter([event["uuid"] for event in events], reason=reason)
        self._metrics.inc("dead_lettered_events_total", count, reason=kind)
        logger.warning("dead-lettered %d event(s) (%s): %s", count, kind, reason)

    def _retry_later(
        self,
        parts: Sequence[Sequence[Mapping[str, Any]]],
        exc: Exception,
        *,
        unauthorized: bool = False,
        retry_after_s: float | None = None,
        kind: str | None = None,
    ) -> None:
        kind = kind or ("unauthorized" if unauthorized else "retry_later")
        now = self._clock()
        self._failures += 1
        delay_s = next_delay(
            self._retry,
            self._failures,
            retry_after_s=retry_after_s,
            unauthorized=unauthorized,
            random=self._random,
        )
        uuids = [event["uuid"] for part in parts for event in part]
        cutoff = expiry_cutoff(self._retry, now=now)
        if cutoff is not None:
            expired = self._outbox.dead_letter_expired(
                uuids,
                enqueued_before=cutoff,
                reason=f"gave up after max_elapsed_time_s={self._retry.max_elapsed_time_s}: {exc}",
            )
            if expired:
                self._metrics.inc("dead_lettered_events_total", len(expired), reason="expired")
                expired_set = set(expired)
                uuids = [uuid for uuid in uuids if uuid not in expired_set]
        self._outbox.nack(uuids, retry_at=now + delay_s, error=str(exc)[:500])
        self._resume_at = now + delay_s
        if unauthorized:
            logger.error(
                "PostHog rejected the API key (%s): %d events kept in the outbox, next attempt in %.0f s;"
                " check POSTHOG_API_KEY",
                exc,
                len(uuids),
                delay_s,
            )
        else:
            logger.warning("delivery failed (%s): %d events rescheduled in %.1f s", exc, len(uuids), delay_s)
        self._metrics.inc("export_errors_total", kind=kind)
        self._metrics.inc("retried_batches_total")  # last: tests wait for it

    # -- gauges ------------------------------------------------------------------------

    def refresh_gauges(self) -> None:
        """Set the outbox and dead-letter gauges from the outbox, and add what it counted since."""
        self._metrics.set("outbox_depth", self._outbox.depth())
        self._metrics.set("outbox_bytes", self._outbox.size_bytes())
        self._metrics.set("outbox_oldest_age_seconds", self._outbox.oldest_age_s() or 0.0)
        self._metrics.set("dead_letters", self._outbox.dead_letter_count())
        corrupt = self._outbox.corrupt_rows - self._corrupt_rows
        if corrupt:
            self._corrupt_rows += corrupt
            self._metrics.inc("dead_lettered_events_total", corrupt, reason="corrupt")
            logger.warning("dead-lettered %d corrupt outbox row(s)", corrupt)
        dropped = self._outbox.dead_letters_dropped - self._dead_letters_dropped
        if dropped:
            self._dead_letters_dropped += dropped
            self._metrics.inc("dead_letters_dropped_total", dropped)
            logger.warning(
                "dropped the %d oldest dead letter(s): the table holds at most %d rows and %d bytes",
                dropped,
                self._outbox.dead_letter_max_rows,
                self._outbox.dead_letter_max_bytes,
            )

    def _lag_s(self, events: Sequence[Mapping[str, Any]]) -> float | None:
        """Seconds from the oldest event's timestamp to its delivery (each distinct timestamp parsed once)."""
        texts = set()
        for event in events:
            try:
                texts.add(event["timestamp"])
            except (KeyError, TypeError, ValueError):  # unhashable, or an event that does not decode
                continue
        oldest = None
        for text in texts:
            try:
                stamp = datetime.fromisoformat(text).timestamp()
            except (TypeError, ValueError):
                continue
            oldest = stamp if oldest is None else min(oldest, stamp)
        return None if oldest is None else max(0.0, self._clock() - oldest)


def _parts(
    events: Sequence[Mapping[str, Any]], *, max_events: int, max_bytes: int
) -> list[Sequence[Mapping[str, Any]]]:
    """The claimed events in export batches of at most max_events and max_bytes (a claim hands out whole
    outbox rows, which may hold more)."""
    parts: list[Sequence[Mapping[str, Any]]] = []
    start = size = 0
    for index, event in enumerate(events):
        event_bytes = _size_bytes(event)
        if index > start and (index - start == max_events or size + event_bytes > max_bytes):
            parts.append(events[start:index])
            start, size = index, 0
        size += event_bytes
    if start < len(events):
        parts.append(events[start:])
    return parts


def _corrupt(event: Mapping[str, Any]) -> str | None:
    """Why an event cannot be sent as an event (None when it can): what every exporter reads of it."""
    try:
        keys = {key: event[key] for key in ("event", "distinct_id", "timestamp")}
        properties = event.get("properties")
    except (KeyError, TypeError, ValueError) as exc:  # undecodable JSON, bad UTF-8, a missing key
        return f"{type(exc).__name__}: {exc}"[:200]
    wrong = [key for key, value in keys.items() if not isinstance(value, str)]
    if wrong:
        return f"{', '.join(wrong)} not a string"
    if properties is not None and not isinstance(properties, Mapping):
        return "properties not an object"
    return None


def _size_bytes(event: Mapping[str, Any]) -> int:
    """The event's stored JSON size (a claimed StoredEvent carries it; others are encoded)."""
    size = getattr(event, "size_bytes", None)
    return size if size is not None else len(encode_event_bytes(event))
