"""instrumentation._internal.sentry.propagation: the sentry-trace header, parsed and written once."""

from __future__ import annotations

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from instrumentation import semconv
from instrumentation._internal.propagation import global_propagator
from instrumentation._internal.sentry.propagation import format_sentry_trace, parse_sentry_trace

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


@pytest.mark.parametrize(
    ("header", "sampled"),
    [(f"{TRACE_ID}-{SPAN_ID}-1", True), (f"{TRACE_ID}-{SPAN_ID}-0", False), (f"{TRACE_ID}-{SPAN_ID}", True),
     (f" {TRACE_ID}-{SPAN_ID}-1 ", True), (f"{TRACE_ID}-{SPAN_ID}-0, {'a' * 32}-{'b' * 16}-1", False)],
)  # fmt: skip
def test_parse_reads_ids_and_the_sampled_flag(header: str, sampled: bool) -> None:
    span_context = parse_sentry_trace(header)
    assert span_context is not None
    assert (span_context.trace_id, span_context.span_id) == (int(TRACE_ID, 16), int(SPAN_ID, 16))
    assert span_context.is_remote and span_context.trace_flags.sampled is sampled


@pytest.mark.parametrize("header", [None, "", "nope", f"{TRACE_ID.upper()}-{SPAN_ID}-1", f"{TRACE_ID}-{SPAN_ID}-2",
                                    f"{TRACE_ID[:-1]}-{SPAN_ID}-1", f"{TRACE_ID}-{SPAN_ID}-1-x"])  # fmt: skip
def test_parse_rejects_what_is_not_a_sentry_trace(header: str | None) -> None:
    assert parse_sentry_trace(header) is None


@pytest.mark.parametrize("flags", [TraceFlags.SAMPLED, TraceFlags.DEFAULT])
def test_format_is_what_parse_reads(flags: int) -> None:
    span_context = SpanContext(int(TRACE_ID, 16), int(SPAN_ID, 16), is_remote=True, trace_flags=TraceFlags(flags))
    header = format_sentry_trace(span_context)
    assert header == f"{TRACE_ID}-{SPAN_ID}-{1 if flags else 0}"
    assert parse_sentry_trace(header) == span_context


def test_without_sentry_the_global_propagator_is_w3c_only() -> None:
    assert global_propagator().fields == {"traceparent", "tracestate", "baggage"}
    ctx = global_propagator().extract({"sentry-trace": f"{TRACE_ID}-{SPAN_ID}-1"})
    assert not trace.get_current_span(ctx).get_span_context().is_valid
