"""The OTLP/HTTP span exporter we use: the SDK's transport and retries, our cheaper encoder."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from instrumentation._internal.otlp_encoding import encode_spans_request

_logger = logging.getLogger(__name__)

ENCODE_CHUNK_SPANS = 64
"""Spans encoded between two GIL releases: the request threads wait at most one chunk (~1-2 ms),
not a whole batch, for the interpreter."""


class OtlpHttpSpanExporter(OTLPSpanExporter):
    """``OTLPSpanExporter`` (same endpoint, headers, retries on 429/502/503/504 with Retry-After)
    that encodes with :func:`encode_spans_request` instead of building protobuf objects."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            chunks = []
            for start in range(0, len(spans), ENCODE_CHUNK_SPANS):
                if start:
                    time.sleep(0)  # release the GIL between chunks
                chunks.append(encode_spans_request(spans[start : start + ENCODE_CHUNK_SPANS]))
            # concatenated requests are one request: protobuf merges repeated fields
            payload = b"".join(chunks)
        except Exception:  # noqa: BLE001 - one bad attribute must not kill the export thread
            _logger.exception("encoding %d spans failed", len(spans))
            return SpanExportResult.FAILURE
        result = self._client.export(payload)
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE
