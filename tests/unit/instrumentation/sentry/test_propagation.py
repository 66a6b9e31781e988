"""instrumentation._internal.sentry.propagation: the sentry-trace header, parsed and written once."""

from __future__ import annotations

import pytest
from opentelemetry import context, trace
from opentelemetry.trace import SpanContext, TraceFlags

from instrumentation._internal.sentry.propagation import (
    SentryTracePropagator,
    format_sentry_trace,
    parse_sentry_trace,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


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


def test_the_propagator_extracts_and_injects_the_header_alone() -> None:
    propagator = SentryTracePropagator()
    ctx = propagator.extract({"sentry-trace": f"{TRACE_ID}-{SPAN_ID}-0", "baggage": "user.id=u_1"}, context.Context())
    extracted = trace.get_current_span(ctx).get_span_context()
    assert (extracted.trace_id, extracted.span_id, extracted.trace_flags.sampled) == (
        int(TRACE_ID, 16),
        int(SPAN_ID, 16),
        False,
    )
    carrier: dict[str, str] = {}
    propagator.inject(carrier, ctx)
    assert carrier == {"sentry-trace": f"{TRACE_ID}-{SPAN_ID}-0"}
    assert propagator.extract({"sentry-trace": "garbage"}, context.Context()) == context.Context()
    assert propagator.fields == {"sentry-trace"}
