"""The OTLP/HTTP span and log exporters we use: the SDK's transport and retries, our cheaper encoder."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from instrumentation._internal.http_transport import lighter_transport
from instrumentation._internal.otel_scrubbing import SpanScrubbing
from instrumentation._internal.otlp_encoding import encode_logs_request, encode_spans_request
from instrumentation._internal.spool import Outcome, Spool
from instrumentation._internal.stats import STATS

ItemT = TypeVar("ItemT")

_logger = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0
"""With a spool: the wait before the first retry of a failed export, doubled (with jitter) after
each failed one up to ``RETRY_MAX_S``; a Retry-After (up to ``RETRY_AFTER_MAX_S``) wins."""
RETRY_AFTER_MAX_S = 30.0
SPOOL_DRAIN_BUDGET_S = 1.0
"""Longest the export thread sends from the spool in one go before it takes new records again."""
LOG_INTERVAL_S = 60.0

ENCODE_CHUNK_ITEMS = 64
"""Spans or records encoded in a row: where spans end (``batching.EncodingSpanProcessor``), and between
two GIL releases on an export thread (request threads wait for the interpreter at most one chunk)."""


def encode_in_chunks(items: Sequence[ItemT], encode: Callable[[Sequence[ItemT]], bytes]) -> bytes:
    """One request's bytes, encoded ``ENCODE_CHUNK_ITEMS`` items at a time with the GIL released
    in between; concatenated requests are one request (protobuf merges repeated fields)."""
    chunks = []
    for start in range(0, len(items), ENCODE_CHUNK_ITEMS):
        if start:
            time.sleep(0)
        chunks.append(encode(items[start : start + ENCODE_CHUNK_ITEMS]))
    return b"".join(chunks)


def _send(
    exporter: Any,
    items: Sequence[Any],
    encode: Callable[[Sequence[Any]], bytes],
    prepare: Callable[[Any], Any] | None,
    signal: str,
) -> bool:
    payload = _encode(exporter, items, encode, prepare, signal)
    return payload is not None and exporter._client.export(payload).success


def _encode(
    exporter: Any,
    items: Sequence[Any],
    encode: Callable[[Sequence[Any]], bytes],
    prepare: Callable[[Any], Any] | None,
    signal: str,
) -> bytes | None:
    """The request body (``prepare``d, e.g. scrubbed, chunk by chunk); None after shutdown or on failure."""
    if exporter._shutdown:
        return None
    if prepare is not None:
        encode_items = encode

        def encode(chunk: Sequence[Any]) -> bytes:
            return encode_items([prepare(item) for item in chunk])

    try:
        return encode_in_chunks(items, encode)
    except Exception:
        _logger.exception("encoding %d %s failed", len(items), signal)
        return None


class _OneAttemptExport:
    """One POST per request (the transport's immediate reconnect aside), and after a failure that may
    pass (connection refused, timeout, 408, 429, 5xx) a back-off before the next attempt, instead of
    the SDK's retries on the export thread (which hold it for seconds while the queue fills)."""

    _client: Any
    _what = "items"
    _then = "dropped"

    def _init_attempts(self) -> None:
        self._retry_at = 0.0
        self._retry_delay_s = RETRY_FIRST_S
        self._next_log_at = 0.0

    def _backing_off(self) -> bool:
        return time.monotonic() < self._retry_at

    def _attempt(self, payload: bytes) -> Outcome:
        """One POST; a RETRY sets the next retry time."""
        client = self._client
        retry_after: float | None = None
        status: int | None
        reason: object
        try:
            result = client._submit(client._compress(payload), client._timeout)
        except Exception as exc:
            status, reason = None, repr(exc)
        else:
            status, reason = result.status_code, result.reason or result.error
            if status is not None and 200 <= status < 400:
                self._retry_delay_s = RETRY_FIRST_S
                return Outcome.DELIVERED
            if status is not None and status != 408 and status != 429 and status < 500:
                self._log("%s rejected by %s (HTTP %s %s): dropped", self._what, client._endpoint, status, reason or "")
                return Outcome.REJECTED
            if status is not None:
                retry_after = _retry_after_s(result)
        delay = self._retry_delay_s * random.uniform(0.8, 1.2)
        self._retry_delay_s = min(self._retry_delay_s * 2, RETRY_MAX_S)
        self._retry_at = time.monotonic() + (delay if retry_after is None else retry_after)
        self._log("exporting %s to %s failed (%s): %s", self._what, client._endpoint, status or reason, self._then)
        return Outcome.RETRY

    def _log(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now >= self._next_log_at:
            self._next_log_at = now + LOG_INTERVAL_S
            _logger.warning(message, *args)


class OtlpHttpSpanExporter(_OneAttemptExport, OTLPSpanExporter):
    """``OTLPSpanExporter`` (same endpoint, headers, retries on 429/502/503/504 with Retry-After)
    that encodes with :func:`encode_spans_request` instead of building protobuf objects, and sends
    over ``http.client`` instead of a plain ``requests`` session (:mod:`.http_transport`).

    ``prepare`` (e.g. scrubbing) runs on each span chunk by chunk, inside the GIL releases.
    ``one_attempt``: no SDK retries; after a failure that may pass, spans are dropped (the queue
    counts them) without an attempt until the back-off has passed, so the export thread keeps
    draining the queue (the processor sends what a dropped batch carries for analytics another way).
    """

    _what = "spans"
    _then = "dropped until it answers again"

    def __init__(
        self,
        *args: Any,
        prepare: Callable[[ReadableSpan], ReadableSpan] | None = None,
        one_attempt: bool = False,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        lighter_transport(self)
        self._prepare = prepare
        self._one_attempt = one_attempt
        self._mirrors: list[Callable[[bytes], None]] = []
        self._init_attempts()

    def add_mirror(self, mirror: Callable[[bytes], None]) -> None:
        """``mirror`` gets every request body this exporter encodes (sent or not): a second destination
        of the same spans (Sentry's OTLP endpoint) without a second scrubbing and encoding."""
        self._mirrors.append(mirror)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        payload = self.encode(spans)
        succeeded = payload is not None and self.export_payload(payload)
        return SpanExportResult.SUCCESS if succeeded else SpanExportResult.FAILURE

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes | None:
        """The request body of ``spans``, each ``prepare``d (scrubbed); None after shutdown or on failure.
        Bodies concatenated are one request (protobuf merges repeated fields)."""
        prepare = self._prepare
        if isinstance(prepare, SpanScrubbing):  # scrubs and encodes in one pass
            return _encode(self, spans, prepare.encode_request, None, "spans")
        return _encode(self, spans, encode_spans_request, prepare, "spans")

    def export_payload(self, payload: bytes) -> bool:
        """Hand an encoded body to the mirrors, then POST it (:meth:`send_payload`)."""
        for mirror in self._mirrors:
            mirror(payload)
        return self.send_payload(payload)

    def send_payload(self, payload: bytes) -> bool:
        """POST an encoded request body: once (``one_attempt``: nothing while backing off), else with
        the SDK's retries."""
        if self._shutdown:
            return False
        if self._one_attempt:
            return not self._backing_off() and self._attempt(payload) is Outcome.DELIVERED
        return bool(self._client.export(payload).success)


class OtlpHttpLogRecordExporter(_OneAttemptExport, OTLPLogExporter):
    """``OTLPLogExporter`` with :func:`encode_logs_request` (event records: ``event_name`` kept);
    ``prepare`` as for spans.

    With a ``spool`` (:mod:`.spool`), a request that fails for a reason that may pass (connection
    refused, timeout, 408, 429, 5xx) is tried once, then written to the spool as encoded; while the
    spool holds anything, new requests go behind it (oldest first) and the spool is sent from when its
    retry time has come, on the export thread (:meth:`drain_spool`). Without one, the SDK's retries.
    """

    _what = "event records"
    _then = "kept in the spool, retried from there"

    def __init__(
        self,
        *args: Any,
        prepare: Callable[[ReadableLogRecord], ReadableLogRecord] | None = None,
        spool: Spool | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        lighter_transport(self)
        self._prepare = prepare
        self.spool = spool
        self._init_attempts()

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        spool = self.spool
        if spool is None:
            succeeded = _send(self, batch, encode_logs_request, self._prepare, "log records")
            return LogRecordExportResult.SUCCESS if succeeded else LogRecordExportResult.FAILURE
        payload = _encode(self, batch, encode_logs_request, self._prepare, "log records")
        if payload is None:
            return LogRecordExportResult.FAILURE
        if not spool.pending and not self._backing_off():
            outcome = self._attempt(payload)
            if outcome is not Outcome.RETRY:
                return LogRecordExportResult.SUCCESS if outcome is Outcome.DELIVERED else LogRecordExportResult.FAILURE
            STATS.increment("event_records_export_failures")
        if not spool.append(payload, len(batch)):
            return LogRecordExportResult.FAILURE
        self.drain_spool()
        return LogRecordExportResult.SUCCESS

    def drain_spool(self, budget_s: float = SPOOL_DRAIN_BUDGET_S) -> None:
        """On the export thread: adopt the spools of dead processes, then send from the spool, oldest
        first, for at most ``budget_s`` when its retry time has come."""
        spool = self.spool
        if spool is None or self._shutdown:
            return
        spool.adopt_orphans()
        if spool.pending and not self._backing_off():
            spool.drain(self._attempt, time.monotonic() + budget_s)

    def shutdown(self) -> None:
        """Send what the spool holds while the endpoint answers (one budget), then close it: what is
        left is adopted by the next process."""
        spool = self.spool
        if spool is not None:
            try:
                self.drain_spool()
            finally:
                spool.close()
        super().shutdown()


def _retry_after_s(result: Any) -> float | None:
    try:
        value = result.headers().get("retry-after")
        return min(max(float(value), 0.0), RETRY_AFTER_MAX_S) if value else None
    except (AttributeError, TypeError, ValueError):
        return None
