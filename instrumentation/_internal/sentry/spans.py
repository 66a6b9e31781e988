"""The span path to Sentry: spans go to Sentry's OTLP endpoint through our export queue and our
:class:`OtlpHttpSpanExporter`, scrubbed chunk by chunk while encoding (never sent unscrubbed).

It replaces sentry-sdk's own span exporter, which would use the collector's
``OTEL_EXPORTER_OTLP_HEADERS`` and TLS settings. With ``PHONOGLYPH_SENTRY_SPANS=off`` there is no
span path at all (an OpenTelemetry Collector forwards the spans).
"""

from __future__ import annotations

import functools
from typing import Any, Final

import requests
from opentelemetry.sdk.trace import TracerProvider

from instrumentation._internal.batching import QueueingSpanProcessor
from instrumentation._internal.config import QueueConfig
from instrumentation._internal.exporters import OtlpHttpSpanExporter
from instrumentation._internal.otel_scrubbing import scrub_span
from instrumentation.scrubbing import Scrubber

SENTRY_OTLP_HEADERS: Final = frozenset({"content-type", "content-encoding", "user-agent", "x-sentry-auth"})
"""The only request headers Sentry's OTLP endpoint gets."""

_QUEUE = QueueConfig()
_ACTIVE: list[QueueingSpanProcessor] = []
"""The span path's processor while Sentry is set up (at most one)."""


class SentryOtlpSession(requests.Session):
    """The HTTP session of the exporter to Sentry's OTLP endpoint: it sends only the headers that
    endpoint needs. ``OTEL_EXPORTER_OTLP_HEADERS`` (often the collector's bearer token) is meant for
    the collector; the OTLP exporter would add it to every request, to Sentry too."""

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        headers = kwargs.get("headers")
        if headers:
            kwargs["headers"] = {name: value for name, value in headers.items() if name.lower() in SENTRY_OTLP_HEADERS}
        return super().request(method, url, *args, **kwargs)  # type: ignore[arg-type]


def sentry_otlp_exporter(dsn: str, timeout_s: float, scrubber: Scrubber) -> OtlpHttpSpanExporter:
    """An exporter to the OTLP endpoint of ``dsn``'s project, authenticated as sentry-sdk does."""
    from sentry_sdk.consts import VERSION, EndpointType
    from sentry_sdk.utils import Dsn

    auth = Dsn(dsn).to_auth(f"sentry.python/{VERSION}")
    session = SentryOtlpSession()
    exporter = OtlpHttpSpanExporter(
        endpoint=auth.get_api_url(EndpointType.OTLP_TRACES),
        headers={"X-Sentry-Auth": auth.to_header()},
        timeout=timeout_s,
        session=session,
        prepare=functools.partial(scrub_span, scrubber=scrubber),
    )
    # OTEL_EXPORTER_OTLP_CERTIFICATE / CLIENT_* are the collector's TLS settings, not Sentry's
    session.verify, session.cert = True, None
    return exporter


def start_span_path(dsn: str, tracer_provider: TracerProvider, scrubber: Scrubber) -> QueueingSpanProcessor:
    """Add a queue that exports ``tracer_provider``'s spans to Sentry; returns its processor."""
    processor = QueueingSpanProcessor(sentry_otlp_exporter(dsn, _QUEUE.export_timeout_s, scrubber), _QUEUE)
    tracer_provider.add_span_processor(processor)
    _ACTIVE[:] = [processor]
    return processor


def active_span_processors() -> list[QueueingSpanProcessor]:
    """The span path's processor, if it is running (a copy of the list)."""
    return list(_ACTIVE)


def stop_span_path() -> None:
    """Export the spans still queued for Sentry; the provider's shutdown stops the processor."""
    for processor in _ACTIVE:
        processor.force_flush()
    _ACTIVE.clear()
