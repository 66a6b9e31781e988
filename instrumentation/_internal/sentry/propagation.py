"""The ``sentry-trace`` header: one parser, one formatter, and the propagator that uses them.

``sentry-trace`` is ``{trace_id:32 hex}-{span_id:16 hex}[-{sampled:0|1}]``; without the sampled flag
the caller left the decision to us, which the OTel parent-based sampler reads as sampled.
"""

from __future__ import annotations

import re
from typing import Final

from opentelemetry import trace
from opentelemetry.context import Context, get_current
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

SENTRY_TRACE_HEADER: Final = "sentry-trace"
_SENTRY_TRACE: Final = re.compile(r"^\s*([0-9a-f]{32})-([0-9a-f]{16})(?:-([01]))?\s*$")


def parse_sentry_trace(header: str | None) -> SpanContext | None:
    """The remote span context in a ``sentry-trace`` value (the first of comma-joined values), or
    None when it is absent or malformed."""
    if not header:
        return None
    if "," in header:
        header = next((part for part in header.split(",") if part.strip()), "")
    match = _SENTRY_TRACE.match(header)
    if match is None:
        return None
    return SpanContext(
        trace_id=int(match.group(1), 16),
        span_id=int(match.group(2), 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.DEFAULT if match.group(3) == "0" else TraceFlags.SAMPLED),
    )


def format_sentry_trace(span_context: SpanContext) -> str:
    """The ``sentry-trace`` value that names ``span_context`` as the parent of the callee's spans."""
    sampled = "1" if span_context.trace_flags.sampled else "0"
    return f"{trace.format_trace_id(span_context.trace_id)}-{trace.format_span_id(span_context.span_id)}-{sampled}"


class SentryTracePropagator(TextMapPropagator):
    """Honours an incoming ``sentry-trace`` header and writes one on outgoing calls.

    Placed before W3C tracecontext in the composite, so ``traceparent`` wins when both are sent.
    It never writes ``baggage`` (the W3C baggage propagator owns that header).
    """

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = default_getter
    ) -> Context:
        if context is None:
            context = get_current()
        values = getter.get(carrier, SENTRY_TRACE_HEADER)
        span_context = parse_sentry_trace(values[0]) if values else None
        if span_context is None:
            return context
        return trace.set_span_in_context(NonRecordingSpan(span_context), context)

    def inject(
        self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = default_setter
    ) -> None:
        span_context = trace.get_current_span(context).get_span_context()
        if span_context.is_valid:
            setter.set(carrier, SENTRY_TRACE_HEADER, format_sentry_trace(span_context))

    @property
    def fields(self) -> set[str]:
        return {SENTRY_TRACE_HEADER}
