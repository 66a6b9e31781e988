"""The OTLP/HTTP span and log exporters we use: the SDK's transport and retries, our cheaper encoder."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from instrumentation._internal.otlp_encoding import encode_logs_request, encode_spans_request

ItemT = TypeVar("ItemT")

_logger = logging.getLogger(__name__)

ENCODE_CHUNK_ITEMS = 64
"""Spans or records encoded between two GIL releases: request threads wait for the interpreter at
most one chunk, not a whole batch."""


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
    if exporter._shutdown:
        return False
    if prepare is not None:
        encode_items = encode

        def encode(chunk: Sequence[Any]) -> bytes:
            return encode_items([prepare(item) for item in chunk])

    try:
        payload = encode_in_chunks(items, encode)
    except Exception:
        _logger.exception("encoding %d %s failed", len(items), signal)
        return False
    return exporter._client.export(payload).success


class OtlpHttpSpanExporter(OTLPSpanExporter):
    """``OTLPSpanExporter`` (same endpoint, headers, retries on 429/502/503/504 with Retry-After)
    that encodes with :func:`encode_spans_request` instead of building protobuf objects.

    ``prepare`` (e.g. scrubbing) runs on each span chunk by chunk, inside the GIL releases.
    """

    def __init__(self, *args: Any, prepare: Callable[[ReadableSpan], ReadableSpan] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._prepare = prepare

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        succeeded = _send(self, spans, encode_spans_request, self._prepare, "spans")
        return SpanExportResult.SUCCESS if succeeded else SpanExportResult.FAILURE


class OtlpHttpLogRecordExporter(OTLPLogExporter):
    """``OTLPLogExporter`` with :func:`encode_logs_request` (event records: ``event_name`` kept);
    ``prepare`` as for spans."""

    def __init__(
        self, *args: Any, prepare: Callable[[ReadableLogRecord], ReadableLogRecord] | None = None, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self._prepare = prepare

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        succeeded = _send(self, batch, encode_logs_request, self._prepare, "log records")
        return LogRecordExportResult.SUCCESS if succeeded else LogRecordExportResult.FAILURE
