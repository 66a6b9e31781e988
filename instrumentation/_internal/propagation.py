"""The global propagator: W3C ``traceparent`` + ``baggage``, and ``sentry-trace`` when Sentry is on."""

from __future__ import annotations

from opentelemetry import propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from instrumentation._internal.sentry.propagation import SentryTracePropagator


def global_propagator(*, sentry_trace: bool = False) -> CompositePropagator:
    """W3C tracecontext + baggage; with ``sentry_trace``, ``sentry-trace`` too (extracted and injected).

    ``sentry-trace`` comes first, so an incoming ``traceparent`` wins when a caller sends both.
    """
    propagators: list[TextMapPropagator] = [TraceContextTextMapPropagator(), W3CBaggagePropagator()]
    if sentry_trace:
        propagators.insert(0, SentryTracePropagator())
    return CompositePropagator(propagators)


def set_global_propagator(*, sentry_trace: bool = False) -> None:
    propagate.set_global_textmap(global_propagator(sentry_trace=sentry_trace))
