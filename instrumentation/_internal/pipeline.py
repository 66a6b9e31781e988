"""The objects the public helpers use: OTel API proxies until configure() installs the SDK."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import _logs, metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import Histogram
from opentelemetry.trace import SpanKind

from instrumentation._internal.request_metrics import REQUEST_DURATION as REQUEST_DURATION
from instrumentation._internal.request_metrics import REQUEST_DURATION_BUCKETS_S as REQUEST_DURATION_BUCKETS_S
from instrumentation._internal.request_metrics import RequestDurations, attach

SCOPE_NAME = "phonoglyph.instrumentation"
OPERATION_DURATION = "phonoglyph.operation.duration"


def _duration_histogram(meter: metrics.Meter) -> Histogram:
    return meter.create_histogram(
        OPERATION_DURATION, unit="s", description="Duration of Phonoglyph operations, by operation and outcome."
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
    request_durations: RequestDurations = field(default_factory=lambda: RequestDurations(SCOPE_NAME))
    """``http.server.request.duration``; exported once attached to a MeterProvider (``from_providers``)."""
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
        request_durations = RequestDurations(SCOPE_NAME)
        attach(meter_provider, request_durations)  # every reader of an SDK provider collects it
        return cls(
            tracer=tracer,
            start_server_span=_start_span(tracer_provider, tracer),
            event_logger=logger_provider.get_logger(SCOPE_NAME),
            duration_histogram=_duration_histogram(meter),
            request_durations=request_durations,
        )


CURRENT = [Pipeline()]
"""A one-item list so that configure() and the test reset swap it in place for every module."""


def current() -> Pipeline:
    return CURRENT[0]
