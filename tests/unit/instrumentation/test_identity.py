from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


# The server-span layer's identity rules (docs/architecture.md "Identity"): trust and sessions.

FORGED = "u_someone_else"


def _app_with_identity() -> Any:
    from fastapi import FastAPI

    from instrumentation import instrument_fastapi, track

    app = FastAPI()

    @app.get("/whoami")
    async def whoami() -> dict[str, Any]:
        track("page_viewed")
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # what a job enqueued here would carry to the worker
        return {"baggage": carrier.get("baggage", "")}

    @app.post("/login")
    async def login() -> dict[str, str]:
        identify(user_id="u_login", session_id="s_server")
        return {}

    def identify_request(scope: Mapping[str, Any]) -> Identity | None:
        for key, value in scope["headers"]:
            if key == b"authorization":  # the service's own authentication
                return Identity(user_id=value.decode(), session_id="s_server", guest=False)
        return None

    return instrument_fastapi(app, identify_request=identify_request)


async def _call(captured: Captured, headers: dict[str, str], path: str = "/whoami") -> tuple[dict[str, Any], Any]:
    import httpx

    transport = httpx.ASGITransport(app=_app_with_identity())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await (client.get if path == "/whoami" else client.post)(path, headers=headers)
    [span] = [span for span in captured.spans() if span["kind"] == "SERVER"]
    return span["attributes"], response


async def test_a_callers_baggage_never_sets_the_user_or_the_guest_flag(captured: Captured) -> None:
    attributes, response = await _call(
        captured, {"baggage": f"user.id={FORGED},phonoglyph.user.guest=false,session.id=s_browser,other=kept"}
    )
    assert semconv.USER_ID not in attributes and semconv.USER_GUEST not in attributes
    assert attributes[semconv.SESSION_ID] == "s_browser"
    [event] = captured.events()
    assert semconv.USER_ID not in event["attributes"]
    outgoing = response.json()["baggage"]
    assert FORGED not in outgoing and "other=kept" in outgoing and "s_browser" in outgoing


async def test_an_authenticated_request_keeps_its_own_user_and_propagates_it(captured: Captured) -> None:
    attributes, response = await _call(captured, {"authorization": "u_real", "baggage": f"user.id={FORGED}"})
    assert attributes[semconv.USER_ID] == "u_real"
    assert attributes[semconv.USER_GUEST] is False
    outgoing = response.json()["baggage"]
    assert "user.id=u_real" in outgoing and FORGED not in outgoing


async def test_anonymous_with_the_posthog_session_header_joins_the_browser_session(captured: Captured) -> None:
    attributes, _ = await _call(captured, {"x-posthog-session-id": "0190-browser-session"})
    assert attributes[semconv.SESSION_ID] == "0190-browser-session"
    assert semconv.USER_ID not in attributes


async def test_authenticated_with_a_baggage_session_keeps_the_browser_session(captured: Captured) -> None:
    attributes, response = await _call(captured, {"authorization": "u_real", "baggage": "session.id=s_browser"})
    assert (attributes[semconv.USER_ID], attributes[semconv.SESSION_ID]) == ("u_real", "s_browser")
    [event] = captured.events()
    assert event["attributes"][semconv.SESSION_ID] == "s_browser"
    assert "session.id=s_browser" in response.json()["baggage"]


async def test_authenticated_with_the_posthog_session_header_keeps_the_browser_session(captured: Captured) -> None:
    attributes, _ = await _call(captured, {"authorization": "u_real", "x-posthog-session-id": "ph_s"})
    assert attributes[semconv.SESSION_ID] == "ph_s"


async def test_the_baggage_session_comes_before_the_posthog_header(captured: Captured) -> None:
    attributes, _ = await _call(captured, {"baggage": "session.id=s_baggage", "x-posthog-session-id": "ph_s"})
    assert attributes[semconv.SESSION_ID] == "s_baggage"


async def test_identify_in_a_handler_keeps_the_browser_session(captured: Captured) -> None:
    attributes, _ = await _call(captured, {"x-posthog-session-id": "ph_s"}, path="/login")
    assert (attributes[semconv.USER_ID], attributes[semconv.SESSION_ID]) == ("u_login", "ph_s")


async def test_without_a_browser_session_the_server_session_is_used(captured: Captured) -> None:
    attributes, _ = await _call(captured, {"authorization": "u_real"})
    assert attributes[semconv.SESSION_ID] == "s_server"


async def test_the_posthog_distinct_id_never_overrides_an_authenticated_user(captured: Captured) -> None:
    attributes, _ = await _call(captured, {"authorization": "u_real", "x-posthog-distinct-id": FORGED})
    assert attributes[semconv.USER_ID] == "u_real"
    assert attributes[semconv.USER_GUEST] is False


async def test_the_posthog_distinct_id_names_the_person_of_an_anonymous_request(captured: Captured) -> None:
    attributes, _ = await _call(captured, {"x-posthog-distinct-id": "0190-anon", "x-posthog-session-id": "ph_s"})
    assert attributes[semconv.USER_ID] == "0190-anon"
    assert attributes[semconv.USER_GUEST] is True  # a browser's claim, never a member
    assert attributes[semconv.SESSION_ID] == "ph_s"
    [event] = captured.events()
    assert event["attributes"][semconv.USER_ID] == "0190-anon"


async def test_unusable_browser_ids_are_ignored(captured: Captured) -> None:
    long_id = "s" * 500
    attributes, _ = await _call(
        captured, {"baggage": f"session.id={long_id}", "x-posthog-distinct-id": "  ", "x-posthog-session-id": "ph_s"}
    )
    assert attributes[semconv.SESSION_ID] == "ph_s"
    assert semconv.USER_ID not in attributes


def test_from_caller_drops_untrusted_keys_and_remembers_the_browser_session() -> None:
    from opentelemetry.context import Context

    from instrumentation._internal.identity import context_with_identity, from_caller

    ctx = baggage.set_baggage(semconv.USER_ID, FORGED, Context())
    ctx = baggage.set_baggage(semconv.USER_GUEST, "true", ctx)
    ctx = from_caller(ctx, session_header="ph_s, ph_other")
    assert baggage.get_all(ctx) == {semconv.SESSION_ID: "ph_s"}
    joined = context_with_identity(Identity(user_id="u_1", session_id="s_server"), ctx)
    assert baggage.get_baggage(semconv.SESSION_ID, joined) == "ph_s"
    assert from_caller(Context()) == Context()
