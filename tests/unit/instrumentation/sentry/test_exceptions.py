"""instrumentation._internal.sentry.exceptions: an exception carries the span that recorded it."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from instrumentation import semconv
from instrumentation._internal.sentry.events import before_send
from instrumentation._internal.sentry.exceptions import stamp_exceptions_with_their_span
from instrumentation.scrubbing import Scrubber

SCRUBBER = Scrubber()
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def _hint_for(exception: BaseException) -> dict[str, Any]:
    return {"exc_info": (type(exception), exception, exception.__traceback__)}


def _event(message: str = "boom") -> dict[str, Any]:
    return {
        "event_id": "a" * 32,
        "contexts": {"trace": {"trace_id": "f" * 32, "span_id": "e" * 16, "parent_span_id": None}},
        "exception": {"values": [{"type": "ValueError", "value": message}]},
        "request": {
            "url": "http://api/v1/files",
            "query_string": "page=1&token=tok_SEED",
            "headers": {"Authorization": "Bearer bearer_SEED_123", "Cookie": "sessionid=ck_SEED"},
            "data": {"password": "pw_SEED", "title": "song"},
        },
    }


def _event(message: str = "boom") -> dict[str, Any]:
    return {
        "event_id": "a" * 32,
        "contexts": {"trace": {"trace_id": "f" * 32, "span_id": "e" * 16, "parent_span_id": None}},
        "exception": {"values": [{"type": "ValueError", "value": message}]},
        "request": {
            "url": "http://api/v1/files",
            "query_string": "page=1&token=tok_SEED",
            "headers": {"Authorization": "Bearer bearer_SEED_123", "Cookie": "sessionid=ck_SEED"},
            "data": {"password": "pw_SEED", "title": "song"},
        },
    }


def test_before_send_uses_the_span_stamp_when_no_operation_was_left() -> None:
    provider = TracerProvider()
    stamp_exceptions_with_their_span()
    tracer = provider.get_tracer("test")
    error = ValueError("route failed")
    with tracer.start_as_current_span("GET /files") as span:
        span.set_attribute(semconv.USER_ID, "u_9")
        span.record_exception(error)
    # captured after the server span ended, outside it (as Sentry's ASGI middleware does)
    event = before_send(SCRUBBER, _event(), _hint_for(error))
    assert event is not None
    span_context = span.get_span_context()
    assert event["contexts"]["trace"] == {
        "trace_id": trace.format_trace_id(span_context.trace_id),
        "span_id": trace.format_span_id(span_context.span_id),
    }
    assert event["user"] == {"id": "u_9"}
    assert "tags" not in event


def test_the_innermost_span_stamps_an_exception() -> None:
    provider = TracerProvider()
    stamp_exceptions_with_their_span()
    tracer = provider.get_tracer("test")
    with pytest.raises(ValueError) as raised:
        with tracer.start_as_current_span("outer"):
            with tracer.start_as_current_span("inner") as inner:
                raise ValueError("x")
    assert raised.value.__phonoglyph_span__["span_id"] == trace.format_span_id(  # type: ignore[attr-defined]
        inner.get_span_context().span_id
    )
