"""The span path to Sentry: spans go to Sentry's OTLP endpoint, scrubbed (never sent unscrubbed).

With our OTLP exporter to the collector, the request bodies it encodes (scrubbed) are sent to
Sentry as they are, from a queue of their own with its own thread: one scrubbing and one encoding
per span for both destinations, and neither endpoint holds the other up. With any other span exporter,
the path has its own export queue and :class:`OtlpHttpSpanExporter`, scrubbing while it encodes.

It replaces sentry-sdk's own span exporter, which would use the collector's
``OTEL_EXPORTER_OTLP_HEADERS`` and TLS settings. With ``PHONOGLYPH_SENTRY_SPANS=off`` there is no
span path at all (an OpenTelemetry Collector forwards the spans).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from opentelemetry.sdk.trace import TracerProvider

from instrumentation._internal.batching import EncodingSpanProcessor, ExportQueue, stop_retrying
from instrumentation._internal.config import SPAN_QUEUE_DEFAULTS, QueueConfig
from instrumentation._internal.exporters import OtlpHttpSpanExporter
from instrumentation._internal.http_transport import transport_for
from instrumentation._internal.otel_scrubbing import SpanScrubbing
from instrumentation.scrubbing import Scrubber

SENTRY_OTLP_HEADERS: Final = frozenset({"content-type", "content-encoding", "user-agent", "x-sentry-auth"})
"""The only request headers Sentry's OTLP endpoint gets."""

_QUEUE = SPAN_QUEUE_DEFAULTS
_PAYLOAD_QUEUE = QueueConfig(max_queue_size=64, max_export_batch_size=1)
"""Request bodies (each up to a batch of spans) waiting for Sentry."""
_ACTIVE: list[SpanPath] = []
"""The span path while Sentry is set up (at most one)."""


def sentry_otlp_exporter(dsn: str, timeout_s: float, scrubber: Scrubber) -> OtlpHttpSpanExporter:
    """An exporter to the OTLP endpoint of ``dsn``'s project, authenticated as sentry-sdk does.

    It sends only the headers that endpoint needs: ``OTEL_EXPORTER_OTLP_HEADERS`` (often the
    collector's bearer token) is meant for the collector, and so are ``OTEL_EXPORTER_OTLP_CERTIFICATE``
    and ``CLIENT_*`` (Sentry's TLS is verified against the default CA bundle, with no client certificate).
    """
    from sentry_sdk.consts import VERSION, EndpointType
    from sentry_sdk.utils import Dsn

    auth = Dsn(dsn).to_auth(f"sentry.python/{VERSION}")
    exporter = OtlpHttpSpanExporter(
        endpoint=auth.get_api_url(EndpointType.OTLP_TRACES),
        headers={"X-Sentry-Auth": auth.to_header()},
        timeout=timeout_s,
        prepare=SpanScrubbing(scrubber),
        one_attempt=True,
    )
    client = exporter._client
    client._headers = {name: value for name, value in client._headers.items() if name.lower() in SENTRY_OTLP_HEADERS}
    client._transport.close()
    client._transport = transport_for(client._endpoint)
    return exporter


class PayloadPath:
    """Sends the request bodies another exporter encoded to Sentry, from its own queue and thread."""

    def __init__(self, exporter: OtlpHttpSpanExporter) -> None:
        self.exporter = exporter
        self._queue: ExportQueue[bytes] = ExportQueue(self._send, _PAYLOAD_QUEUE, signal="sentry_span_requests")
        self.put = self._queue.put

    def _send(self, payloads: Sequence[bytes]) -> bool:
        return all([self.exporter.send_payload(payload) for payload in payloads])

    def force_flush(self) -> bool:
        return self._queue.force_flush()

    def shutdown(self) -> None:
        stop_retrying(self.exporter)
        self._queue.shutdown(_QUEUE.export_timeout_s)
        self.exporter.shutdown()


SpanPath = EncodingSpanProcessor | PayloadPath


def start_span_path(
    dsn: str, tracer_provider: TracerProvider, scrubber: Scrubber, collector_exporter: object = None
) -> SpanPath:
    """Send ``tracer_provider``'s spans to Sentry too: the bodies ``collector_exporter`` encodes when it
    is ours, else through an export queue of its own on the provider; returns the path."""
    exporter = sentry_otlp_exporter(dsn, _QUEUE.export_timeout_s, scrubber)
    path: SpanPath
    if isinstance(collector_exporter, OtlpHttpSpanExporter):
        path = PayloadPath(exporter)
        collector_exporter.add_mirror(path.put)
    else:
        path = EncodingSpanProcessor(exporter, _QUEUE)
        tracer_provider.add_span_processor(path)
    _ACTIVE[:] = [path]
    return path


def active_span_paths() -> list[SpanPath]:
    """The span path, if it is running (a copy of the list)."""
    return list(_ACTIVE)


def stop_span_path() -> None:
    """Export the spans still queued for Sentry; the provider's shutdown stops a processor, a payload
    path stops here (after the provider's shutdown has encoded the last spans)."""
    for path in _ACTIVE:
        path.force_flush()
        if isinstance(path, PayloadPath):
            path.shutdown()
    _ACTIVE.clear()
