"""Span and event-record processors that only enqueue on the caller's thread.

The request thread does one bounded ``deque.append``; a worker thread takes batches off the queue
and runs the exporter (scrubbing, encoding, HTTP) with instrumentation suppressed. A full queue
drops the item and counts it. After ``fork`` the child gets an empty queue and a new worker.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from opentelemetry._logs import LogRecord
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import NonRecordingSpan, StatusCode, set_span_in_context

from instrumentation import semconv
from instrumentation._internal.config import QueueConfig
from instrumentation._internal.exporters import ENCODE_CHUNK_ITEMS
from instrumentation._internal.otel_scrubbing import span_attributes
from instrumentation._internal.stats import STATS

_logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
MAX_REQUEST_BYTES = 1 << 20
"""Largest export request ``EncodingSpanProcessor`` makes from several chunks: far below the collector's
4 MiB limit (``limits.max_request_bytes``) and Sentry's."""
_EMPTY_CONTEXT = Context()


class ExportQueue(Generic[ItemT]):
    """A bounded queue drained by one daemon worker thread, in batches, off the request path."""

    def __init__(
        self,
        export: Callable[[Sequence[ItemT]], bool],
        config: QueueConfig,
        *,
        signal: str,
        tick: Callable[[], None] | None = None,
        collect: Callable[[], None] | None = None,
        size: Callable[[ItemT], int] | None = None,
    ) -> None:
        """``tick``: the exporter's periodic work, after each drain. ``collect``: puts the producers'
        unfinished work in the queue, before each drain but a full batch's (timer, flush, shutdown).
        ``size``: how many records an item stands for in the counters (default 1)."""
        self._export = export
        self._tick = tick
        self._collect = collect
        self._size = size
        self._config = config
        self._max_queue_size = config.max_queue_size
        self._max_export_batch_size = config.max_export_batch_size
        self._dropped_counter = f"{signal}_dropped"
        self._failed_counter = f"{signal}_export_failures"
        self._signal = signal
        self._shutdown = False
        self._start_worker()
        if hasattr(os, "register_at_fork"):
            ref = weakref.WeakMethod(self._after_fork_in_child)
            os.register_at_fork(after_in_child=lambda: (method := ref()) and method())

    def _start_worker(self) -> None:
        self._queue: deque[ItemT] = deque()
        self._wake = threading.Event()
        self._export_lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name=f"phonoglyph-{self._signal}-export", daemon=True)
        self._worker.start()

    def _after_fork_in_child(self) -> None:
        # The parent's items are the parent's to export; its worker thread does not exist here.
        if not self._shutdown:
            self._start_worker()

    def drop_if_full(self, count: int) -> bool:
        """Whether the queue is full, counting ``count`` records dropped if so: a producer asks before
        working on items the queue would refuse."""
        if len(self._queue) < self._max_queue_size:
            return False
        STATS.increment(self._dropped_counter, count)
        return True

    def put(self, item: ItemT) -> None:
        """The hot path: one length check and one append; never blocks."""
        queue = self._queue
        if len(queue) >= self._max_queue_size:
            STATS.increment(self._dropped_counter, 1 if self._size is None else self._size(item))
            return
        queue.append(item)
        if len(queue) == self._max_export_batch_size:
            self._wake.set()

    def _run(self) -> None:
        wake = self._wake
        while not self._shutdown:
            woken_by_full_batch = wake.wait(self._config.schedule_delay_s)
            wake.clear()
            if self._shutdown:
                break
            self._drain(full_batches_only=woken_by_full_batch)
            self._run_tick()

    def _run_tick(self) -> None:
        """The exporter's periodic work between batches (sending from its spool), off the request path."""
        if self._tick is None:
            return
        with self._export_lock, suppress_instrumentation():
            try:
                self._tick()
            except Exception:
                _logger.exception("the %s exporter's periodic work failed", self._signal)

    def _drain(self, full_batches_only: bool = False) -> None:
        """Export the queue in batches. Woken by a full batch, the worker exports only full batches
        (few large requests under load); on its timer, at flush and at shutdown, everything."""
        with self._export_lock, suppress_instrumentation():
            if not full_batches_only and self._collect is not None:
                try:
                    self._collect()
                except Exception:
                    _logger.exception("collecting the %s to export failed", self._signal)
            queue = self._queue
            batch_size = self._max_export_batch_size
            while queue and (not full_batches_only or len(queue) >= batch_size):
                batch = [queue.popleft() for _ in range(min(len(queue), batch_size))]
                try:
                    succeeded = self._export(batch)
                except Exception:
                    _logger.exception("exporting %d %s failed", len(batch), self._signal)
                    succeeded = False
                if not succeeded:
                    STATS.increment(self._failed_counter)
                    STATS.increment(f"{self._signal}_lost", self._count(batch))

    def force_flush(self) -> bool:
        """Export everything queued so far, on the calling thread."""
        self._drain()
        self._run_tick()
        return True

    def shutdown(self, timeout_s: float) -> None:
        if self._shutdown:
            return
        self._shutdown = True
        self._wake.set()
        if self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join(timeout_s)
            if self._worker.is_alive():  # stuck in an export: shutdown does not wait any longer
                STATS.increment(f"{self._signal}_lost", self._count(self._queue))
                return
        self._drain()

    def _count(self, items: Sequence[ItemT] | deque[ItemT]) -> int:
        return len(items) if self._size is None else sum(self._size(item) for item in items)


SHUTDOWN_EXPORT_TIMEOUT_S = 1.0
"""At shutdown, the longest one export request may take."""


def stop_retrying(exporter: object, timeout_s: float = SHUTDOWN_EXPORT_TIMEOUT_S) -> None:
    """From now on an OTLP exporter makes one attempt per batch, within ``timeout_s``, and a retry it
    is waiting for is not made: an unreachable endpoint (the collector, Sentry's OTLP endpoint) never
    holds shutdown up with back-off waits."""
    client = getattr(exporter, "_client", None)
    shutdown_event = getattr(client, "_shutdown_event", None)
    if isinstance(shutdown_event, threading.Event):
        shutdown_event.set()
    if isinstance(getattr(client, "_timeout", None), (int, float)):
        client._timeout = min(client._timeout, timeout_s)  # type: ignore[union-attr]


def operation_outcome_record(span: ReadableSpan) -> ReadableLogRecord | None:
    """The outcome event record of an operation span (the one an unsampled operation emits): the
    collector gives it the same uuid as the span's outcome (``trace_id:span_id:<name>``), so either
    one, or both, make one event. None for a span that is not an operation's."""
    attributes = span.attributes or {}
    operation = attributes.get(semconv.OPERATION)
    start, end = span.start_time, span.end_time
    if not isinstance(operation, str) or not operation or start is None or end is None:
        return None
    outcome = attributes.get(semconv.OUTCOME)
    if outcome not in (semconv.OUTCOME_COMPLETED, semconv.OUTCOME_FAILED):
        failed = span.status.status_code is StatusCode.ERROR
        outcome = semconv.OUTCOME_FAILED if failed else semconv.OUTCOME_COMPLETED
    record_attributes = dict(attributes)
    record_attributes[semconv.DURATION_MS] = (end - start) / 1e6
    span_context = span.get_span_context()
    assert span_context is not None  # a finished SDK span always has one
    record = LogRecord(
        timestamp=end,
        observed_timestamp=end,
        context=set_span_in_context(NonRecordingSpan(span_context)),
        event_name=f"{operation}_{outcome}",
        attributes=record_attributes,
    )
    record.context = _EMPTY_CONTEXT
    return ReadableLogRecord(
        log_record=record, resource=span.resource, instrumentation_scope=span.instrumentation_scope
    )


class QueueingSpanProcessor(SpanProcessor):
    """Sampled spans go to the export queue when they end; nothing else happens on the request thread.

    ``on_undelivered`` (on the export thread) gets the outcome records of the operation spans in a
    batch the exporter could not deliver: spans may be dropped, the analytics they carry are not.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        config: QueueConfig,
        on_undelivered: Callable[[list[ReadableLogRecord]], None] | None = None,
    ) -> None:
        self._exporter = exporter
        self._on_undelivered = on_undelivered
        self._queue: ExportQueue[ReadableSpan] = ExportQueue(self._export, config, signal="spans")
        self.put_span = self._queue.put
        """Queue an ended, sampled span (a lean span's ``end``: :mod:`.lean_span`); it is scrubbed and
        encoded on the export thread, many in a row (per-request code runs cold: the same work costs about
        3x more once per request on the request's thread)."""

    def _export(self, spans: Sequence[ReadableSpan]) -> bool:
        if self._exporter.export(spans) is SpanExportResult.SUCCESS:
            return True
        self._undelivered(spans)
        return False

    def _undelivered(self, spans: Sequence[ReadableSpan]) -> None:
        if self._on_undelivered is not None:
            records = [record for span in spans if (record := operation_outcome_record(span)) is not None]
            if records:
                STATS.increment("operation_outcomes_from_undelivered_spans", len(records))
                self._on_undelivered(records)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if span.context.trace_flags.sampled:
            self.put_span(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._queue.force_flush()

    def shutdown(self, timeout_s: float = 5.0) -> None:
        stop_retrying(self._exporter)
        self._queue.shutdown(timeout_s)
        self._exporter.shutdown()


class PayloadExporter(Protocol):
    """A span exporter that encodes request bodies and sends them apart (``OtlpHttpSpanExporter``)."""

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes | None: ...

    def export_payload(self, payload: bytes) -> bool: ...

    def shutdown(self) -> None: ...


class EncodedSpans:
    """A chunk of ended spans as the request body their exporter encoded (scrubbed)."""

    __slots__ = ("body", "count", "operations")

    def __init__(self, body: bytes, count: int, operations: list[ReadableSpan]) -> None:
        self.body = body
        self.count = count
        self.operations = operations
        """The chunk's operation spans: their outcomes become event records if the body is not delivered."""


def _span_count(chunk: EncodedSpans) -> int:
    return chunk.count


class EncodingSpanProcessor(QueueingSpanProcessor):
    """The span processor of our OTLP exporter: ended spans are scrubbed and encoded on the thread that
    ends them, ``ENCODE_CHUNK_ITEMS`` in a row (the code runs hot, not once per request), and the queue
    holds request bodies, which the export thread joins and sends.

    So no span outlives its chunk: spans held in the queue until their batch was sent reached the
    garbage collector's oldest generation, whose full collections stopped the event loop for about 35 ms.
    And the export thread needs the GIL only to send, so the event loop rarely waits for it. What is
    still pending (less than a chunk) is encoded by the export thread on its timer, at a flush and at
    shutdown.
    """

    _exporter: PayloadExporter  # type: ignore[assignment]  # a SpanExporter that also encodes and sends apart

    def __init__(
        self,
        exporter: PayloadExporter,
        config: QueueConfig,
        on_undelivered: Callable[[list[ReadableLogRecord]], None] | None = None,
    ) -> None:
        self._exporter = exporter
        self._on_undelivered = on_undelivered
        self._chunk = max(1, min(ENCODE_CHUNK_ITEMS, config.max_export_batch_size))
        self._pending: deque[ReadableSpan] = deque()
        chunks = dataclasses.replace(
            config,
            max_queue_size=-(-config.max_queue_size // self._chunk),
            max_export_batch_size=-(-config.max_export_batch_size // self._chunk),
        )
        self._queue: ExportQueue[EncodedSpans] = ExportQueue(  # type: ignore[assignment]
            self._send, chunks, signal="spans", collect=self._encode_pending, size=_span_count
        )
        self.put_span = self._put  # type: ignore[assignment]
        if hasattr(os, "register_at_fork"):  # the parent's pending spans are the parent's to export
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _clear_pending(ref()))

    def _put(self, span: ReadableSpan) -> None:
        pending = self._pending
        pending.append(span)
        if len(pending) >= self._chunk:
            self._encode_pending(self._chunk)

    def _encode_pending(self, limit: int = 0) -> None:
        """Encode up to ``limit`` pending spans (0: all) and queue their body. Threads may do it at once:
        each span is taken by exactly one (``popleft``)."""
        pending = self._pending
        chunk = []
        try:
            for _ in range(limit or len(pending)):
                chunk.append(pending.popleft())
        except IndexError:
            pass
        if not chunk:
            return
        if self._queue.drop_if_full(len(chunk)):  # counted, not encoded for nothing
            return
        operations = [span for span in chunk if semconv.OPERATION in span_attributes(span)]
        body = self._exporter.encode(chunk)
        if body is None:
            STATS.increment("spans_lost", len(chunk))
            self._undelivered(operations)
            return
        self._queue.put(EncodedSpans(body, len(chunk), operations))

    def _send(self, chunks: Sequence[EncodedSpans]) -> bool:
        """One request per run of chunks up to ``MAX_REQUEST_BYTES`` (a larger chunk goes alone); each
        request that fails counts its own spans lost (so the queue is told the batch went)."""
        start, size = 0, 0
        for index, chunk in enumerate(chunks):
            if index > start and size + len(chunk.body) > MAX_REQUEST_BYTES:
                self._send_request(chunks[start:index])
                start, size = index, 0
            size += len(chunk.body)
        self._send_request(chunks[start:])
        return True

    def _send_request(self, chunks: Sequence[EncodedSpans]) -> None:
        if self._exporter.export_payload(b"".join([chunk.body for chunk in chunks])):
            return
        STATS.increment("spans_export_failures")
        STATS.increment("spans_lost", sum(chunk.count for chunk in chunks))
        self._undelivered([span for chunk in chunks for span in chunk.operations])


def _clear_pending(processor: EncodingSpanProcessor | None) -> None:
    if processor is not None:
        processor._pending.clear()


class QueueingLogRecordProcessor(LogRecordProcessor):
    """Event records go to the export queue; they are never trace-sampled."""

    def __init__(self, exporter: LogRecordExporter, config: QueueConfig) -> None:
        self._exporter = exporter
        self._queue: ExportQueue[ReadableLogRecord] = ExportQueue(
            self._export, config, signal="event_records", tick=getattr(exporter, "drain_spool", None)
        )
        self._put = self._queue.put

    def _export(self, records: Sequence[ReadableLogRecord]) -> bool:
        return self._exporter.export(records) is LogRecordExportResult.SUCCESS

    def put_records(self, records: list[ReadableLogRecord]) -> None:
        """Queue records made elsewhere (from any thread): the outcomes of undelivered operation spans."""
        for record in records:
            self._put(record)

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        record = log_record.log_record
        record.context = _EMPTY_CONTEXT  # keep the trace/span ids, not the whole request context
        self._put(
            ReadableLogRecord(
                log_record=record,
                resource=log_record.resource,  # type: ignore[arg-type]  # the LoggerProvider always sets it
                instrumentation_scope=log_record.instrumentation_scope,
                limits=log_record.limits,
            )
        )

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._queue.force_flush()

    def shutdown(self, timeout_s: float = 5.0) -> None:
        stop_retrying(self._exporter)
        self._queue.shutdown(timeout_s)
        self._exporter.shutdown()
