from __future__ import annotations

import uuid

from opentelemetry import trace

from instrumentation import identify, semconv, track
from instrumentation.testing import Captured


def test_track_emits_an_event_record_with_a_fixed_event_id(captured: Captured) -> None:
    event_id = track("project_created", {semconv.PROJECT_ID: "p_1"}, plan="pro")
    assert uuid.UUID(event_id).version == 4
    [event] = captured.events()
    assert event["event_name"] == "project_created"
    assert event["attributes"] == {semconv.PROJECT_ID: "p_1", "plan": "pro", semconv.EVENT_ID: event_id}
    assert event["resource"][semconv.SERVICE_NAME] == "unit-test"
    assert event["trace_id"] is None


def test_track_carries_the_current_trace_and_identity(captured: Captured) -> None:
    tracer = trace.get_tracer("test")
    with identify(user_id="u_1", session_id="s_1", guest=False):
        with tracer.start_as_current_span("request") as span:
            track("file_uploaded", {semconv.FILE_ID: "f_1"})
    [event] = captured.events()
    context = span.get_span_context()
    assert event["trace_id"] == trace.format_trace_id(context.trace_id)
    assert event["span_id"] == trace.format_span_id(context.span_id)
    assert event["attributes"][semconv.USER_ID] == "u_1"
    assert event["attributes"][semconv.SESSION_ID] == "s_1"
    assert event["attributes"][semconv.USER_GUEST] is False


def test_event_records_are_not_trace_sampled(unsampled: Captured) -> None:
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request"):
        track("credits_purchased", credits=10)
    assert unsampled.spans() == []
    [event] = unsampled.events()
    assert event["event_name"] == "credits_purchased"
    assert event["trace_id"] is not None


def test_events_are_scrubbed_before_export(captured: Captured) -> None:
    track("user_signed_up", {"email": "ada@example.com", "password": "hunter2"})
    [event] = captured.events()
    assert "ada@example.com" not in repr(event)
    assert "hunter2" not in repr(event)


def test_track_works_before_configure() -> None:
    assert uuid.UUID(track("project_created"))
