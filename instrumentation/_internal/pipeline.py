"""The objects the public helpers use: OTel API proxies until configure() installs the SDK."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import _logs, metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import Histogram
from opentelemetry.trace import SpanKind

SCOPE_NAME = "phonoglyph.instrumentation"
OPERATION_DURATION = "phonoglyph.operation.duration"
REQUEST_DURATION = "http.server.request.duration"
REQUEST_DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
"""The bucket boundaries OTel's HTTP semantic conventions advise for ``http.server.request.duration``."""


def _duration_histogram(meter: metrics.Meter) -> Histogram:
    return meter.create_histogram(
        OPERATION_DURATION, unit="s", description="Duration of Phonoglyph operations, by operation and outcome."
    )


def _request_histogram(meter: metrics.Meter) -> Histogram:
    return meter.create_histogram(
        REQUEST_DURATION,
        unit="s",
        description="Duration of HTTP server requests.",
        explicit_bucket_boundaries_advisory=list(REQUEST_DURATION_BUCKETS_S),
    )


StartSpan = Callable[[str, Context, SpanKind, dict[str, Any]], trace.Span]
"""``(name, parent_context, kind, attributes) -> started span``: how the server-span layer starts its span."""


def _start_span(tracer_provider: trace.TracerProvider, tracer: trace.Tracer) -> StartSpan | None:
    """Lean spans (:mod:`.lean_span`) from an SDK provider; otherwise None (the tracer's)."""
    from opentelemetry.sdk.trace import Tracer, TracerProvider

    from instrumentation._internal.batching import QueueingSpanProcessor
    from instrumentation._internal.lean_span import LeanSpans

    if isinstance(tracer_provider, TracerProvider) and isinstance(tracer, Tracer):
        return LeanSpans(tracer_provider, tracer, (QueueingSpanProcessor,)).start
    return None


@dataclass
class Pipeline:
    """What operation(), track() and instrument_fastapi() emit through."""

    tracer: trace.Tracer = field(default_factory=lambda: trace.get_tracer(SCOPE_NAME))
    event_logger: _logs.Logger = field(default_factory=lambda: _logs.get_logger(SCOPE_NAME))
    duration_histogram: Histogram = field(default_factory=lambda: _duration_histogram(metrics.get_meter(SCOPE_NAME)))
    request_histogram: Histogram = field(default_factory=lambda: _request_histogram(metrics.get_meter(SCOPE_NAME)))
    start_server_span: StartSpan | None = None
    """None: ``tracer.start_span``."""

    @classmethod
    def from_providers(
        cls,
        tracer_provider: trace.TracerProvider,
        logger_provider: _logs.LoggerProvider,
        meter_provider: metrics.MeterProvider,
    ) -> Pipeline:
        meter = meter_provider.get_meter(SCOPE_NAME)
        tracer = tracer_provider.get_tracer(SCOPE_NAME)
        return cls(
            tracer=tracer,
            start_server_span=_start_span(tracer_provider, tracer),
            event_logger=logger_provider.get_logger(SCOPE_NAME),
            duration_histogram=_duration_histogram(meter),
            request_histogram=_request_histogram(meter),
        )


CURRENT = [Pipeline()]
"""A one-item list so that configure() and the test reset swap it in place for every module."""


def current() -> Pipeline:
    return CURRENT[0]
