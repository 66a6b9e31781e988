"""The OTLP/HTTP span exporter we use: the SDK's transport and retries, our cheaper encoder."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from instrumentation._internal.otlp_encoding import encode_spans_request

_logger = logging.getLogger(__name__)


class OtlpHttpSpanExporter(OTLPSpanExporter):
    """``OTLPSpanExporter`` (same endpoint, headers, retries on 429/502/503/504 with Retry-After)
    that encodes with :func:`encode_spans_request` instead of building protobuf objects."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            payload = encode_spans_request(spans)
        except Exception:  # noqa: BLE001 - one bad attribute must not kill the export thread
            _logger.exception("encoding %d spans failed", len(spans))
            return SpanExportResult.FAILURE
        result = self._client.export(payload)
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE
