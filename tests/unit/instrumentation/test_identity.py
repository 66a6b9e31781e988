from __future__ import annotations

from opentelemetry import baggage, context, propagate, trace

from instrumentation import Identity, identify, semconv
from instrumentation.testing import Captured


def test_identify_block_puts_identity_in_baggage_and_spans(captured: Captured) -> None:
    tracer = trace.get_tracer("test")
    with identify(user_id="u_1", session_id="s_1", guest=False) as identity:
        assert identity == Identity(user_id="u_1", session_id="s_1", guest=False)
        assert baggage.get_baggage(semconv.USER_ID) == "u_1"
        with tracer.start_as_current_span("inside"):
            pass
    assert baggage.get_baggage(semconv.USER_ID) is None
    with tracer.start_as_current_span("outside"):
        pass
    spans = {span["name"]: span for span in captured.spans()}
    assert spans["inside"]["attributes"] == {
        semconv.USER_ID: "u_1",
        semconv.SESSION_ID: "s_1",
        semconv.USER_GUEST: False,
    }
    assert spans["outside"]["attributes"] == {}


def test_plain_identify_call_attaches_for_the_rest_of_the_context_and_tags_the_current_span(
    captured: Captured,
) -> None:
    tracer = trace.get_tracer("test")
    token = context.attach(context.get_current())
    try:
        with tracer.start_as_current_span("request"):
            identify(user_id="u_2", session_id="s_2", guest=True)
            with tracer.start_as_current_span("child"):
                pass
    finally:
        context.detach(token)
    spans = {span["name"]: span for span in captured.spans()}
    assert spans["request"]["attributes"][semconv.USER_ID] == "u_2"
    assert spans["child"]["attributes"][semconv.USER_GUEST] is True


def test_a_new_identity_replaces_the_previous_one(captured: Captured) -> None:
    with identify(user_id="u_1", session_id="s_1"):
        with identify(session_id="s_guest", guest=True):
            assert baggage.get_baggage(semconv.USER_ID) is None
            assert baggage.get_baggage(semconv.SESSION_ID) == "s_guest"
        assert baggage.get_baggage(semconv.USER_ID) == "u_1"


def test_identity_crosses_processes_in_w3c_baggage(captured: Captured) -> None:
    tracer = trace.get_tracer("test")
    carrier: dict[str, str] = {}
    with identify(user_id="u_3", session_id="s_3"):
        with tracer.start_as_current_span("enqueue") as producer:
            propagate.inject(carrier)
    assert "traceparent" in carrier and "u_3" in carrier["baggage"]

    token = context.attach(propagate.extract(carrier))
    try:
        with tracer.start_as_current_span("job"):
            pass
    finally:
        context.detach(token)
    job = next(span for span in captured.spans() if span["name"] == "job")
    assert job["parent_span_id"] == trace.format_span_id(producer.get_span_context().span_id)
    assert job["attributes"][semconv.USER_ID] == "u_3"
    assert job["attributes"][semconv.SESSION_ID] == "s_3"
