"""instrumentation._internal.propagation: the global propagator, W3C plus sentry-trace when Sentry is on."""

from __future__ import annotations

from opentelemetry import baggage, context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from instrumentation import semconv
from instrumentation._internal.propagation import global_propagator

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def _remote_context(carrier: dict[str, str]) -> SpanContext:
    return trace.get_current_span(global_propagator(sentry_trace=True).extract(carrier)).get_span_context()


def test_propagator_extracts_w3c_traceparent_and_baggage() -> None:
    ctx = global_propagator(sentry_trace=True).extract(
        {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01", "baggage": "user.id=u_1,session.id=s_1"}
    )
    span_context = trace.get_current_span(ctx).get_span_context()
    assert (span_context.trace_id, span_context.span_id) == (int(TRACE_ID, 16), int(SPAN_ID, 16))
    assert span_context.is_remote and span_context.trace_flags.sampled
    assert baggage.get_all(ctx) == {"user.id": "u_1", "session.id": "s_1"}


def test_propagator_extracts_sentry_trace() -> None:
    span_context = _remote_context({"sentry-trace": f"{TRACE_ID}-{SPAN_ID}-1"})
    assert (span_context.trace_id, span_context.span_id) == (int(TRACE_ID, 16), int(SPAN_ID, 16))


def test_traceparent_wins_over_sentry_trace() -> None:
    other_trace = "a" * 32
    span_context = _remote_context(
        {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01", "sentry-trace": f"{other_trace}-{'b' * 16}-1"}
    )
    assert span_context.trace_id == int(TRACE_ID, 16)


def test_propagator_injects_w3c_headers_and_sentry_trace() -> None:
    span = NonRecordingSpan(
        SpanContext(int(TRACE_ID, 16), int(SPAN_ID, 16), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    )
    ctx = baggage.set_baggage(semconv.USER_ID, "u_1", trace.set_span_in_context(span))
    carrier: dict[str, str] = {}
    global_propagator(sentry_trace=True).inject(carrier, ctx)
    assert carrier == {
        "traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01",
        "sentry-trace": f"{TRACE_ID}-{SPAN_ID}-1",
        "baggage": "user.id=u_1",
    }
    assert global_propagator(sentry_trace=True).fields == {"traceparent", "tracestate", "baggage", "sentry-trace"}


def test_propagator_injects_nothing_without_a_span() -> None:
    carrier: dict[str, str] = {}
    global_propagator(sentry_trace=True).inject(carrier, context.Context())
    assert carrier == {}


def test_without_sentry_the_global_propagator_is_w3c_only() -> None:
    assert global_propagator().fields == {"traceparent", "tracestate", "baggage"}
    ctx = global_propagator().extract({"sentry-trace": f"{TRACE_ID}-{SPAN_ID}-1"})
    assert not trace.get_current_span(ctx).get_span_context().is_valid
