from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace

from instrumentation import Identity, identify, instrument_fastapi, semconv, track
from instrumentation.testing import Captured

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN_ID = "b7ad6b7169203331"


class Boom(Exception):
    pass


def _identity_from_header(scope: Mapping[str, Any]) -> Identity | None:
    for key, value in scope["headers"]:
        if key == b"x-user":
            return Identity(user_id=value.decode(), session_id="s_hdr")
    return None


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def get_item(item_id: str) -> dict[str, str]:
        track("project_created", {semconv.PROJECT_ID: item_id})
        return {"id": item_id}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/fail")
    async def fail() -> None:
        raise Boom("no")

    @app.get("/unavailable")
    async def unavailable() -> Any:
        from fastapi.responses import JSONResponse

        return JSONResponse({"error": "later"}, status_code=503)

    @app.get("/login")
    async def login() -> dict[str, str]:
        identify(user_id="u_login", session_id="s_login")
        track("user_signed_up")
        return {}

    return app


@pytest.fixture
def client(captured: Captured) -> httpx.AsyncClient:
    app = instrument_fastapi(make_app(), identify_request=_identity_from_header)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://testserver"
    )


async def test_one_server_span_per_request_named_by_route(client: httpx.AsyncClient, captured: Captured) -> None:
    response = await client.get("/items/42?secret_token=abc")
    assert response.status_code == 200
    spans = captured.spans()
    assert len(spans) == 1, [s["name"] for s in spans]
    [span] = spans
    assert span["name"] == "GET /items/{item_id}"
    assert span["kind"] == "SERVER"
    attributes = span["attributes"]
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.route"] == "/items/{item_id}"
    assert attributes["url.path"] == "/items/42"
    assert attributes["http.response.status_code"] == 200
    assert attributes["server.address"] == "testserver"
    assert "abc" not in attributes["url.query"]
    [event] = captured.events()
    assert (event["trace_id"], event["span_id"]) == (span["trace_id"], span["span_id"])


async def test_w3c_traceparent_and_baggage_are_honoured(client: httpx.AsyncClient, captured: Captured) -> None:
    """Baggage brings the browser's session, never a user (the identity trust rule: test_identity.py)."""
    await client.get(
        "/items/1",
        headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01", "baggage": "user.id=u_up,session.id=s_up"},
    )
    [span] = captured.spans()
    assert span["trace_id"] == TRACE_ID
    assert span["parent_span_id"] == PARENT_SPAN_ID
    assert span["attributes"][semconv.SESSION_ID] == "s_up"
    assert semconv.USER_ID not in span["attributes"]


async def test_sentry_trace_is_honoured_without_traceparent(client: httpx.AsyncClient, captured: Captured) -> None:
    await client.get("/items/1", headers={"sentry-trace": f"{TRACE_ID}-{PARENT_SPAN_ID}-1"})
    [span] = captured.spans()
    assert (span["trace_id"], span["parent_span_id"]) == (TRACE_ID, PARENT_SPAN_ID)


async def test_a_request_never_inherits_the_context_it_starts_in(client: httpx.AsyncClient, captured: Captured) -> None:
    """uvicorn can run a keep-alive connection's next request inside the previous one's context
    (CPython #140947): a request without propagation headers must still start a new trace, with
    no identity but its own."""
    from opentelemetry import context

    from instrumentation._internal import pipeline

    stale_span = pipeline.current().tracer.start_span("previous request")
    token = context.attach(trace.set_span_in_context(stale_span))
    try:
        with identify(user_id="u_previous", session_id="s_previous"):
            await client.get("/items/1")
            await client.get("/items/2", headers={"x-user": "u_hdr"})
    finally:
        context.detach(token)
        stale_span.end()
    anonymous, identified = (span for span in captured.spans() if span["kind"] == "SERVER")
    stale_trace_id = trace.format_trace_id(stale_span.get_span_context().trace_id)
    for span in (anonymous, identified):
        assert span["parent_span_id"] is None and span["trace_id"] != stale_trace_id
    assert semconv.USER_ID not in anonymous["attributes"]
    assert identified["attributes"][semconv.USER_ID] == "u_hdr"
    assert anonymous["trace_id"] != identified["trace_id"]


async def test_excluded_urls_get_no_span(client: httpx.AsyncClient, captured: Captured) -> None:
    assert (await client.get("/healthz")).status_code == 200
    assert captured.spans() == []


async def test_identify_request_hook_sets_identity_on_span_and_events(
    client: httpx.AsyncClient, captured: Captured
) -> None:
    await client.get("/items/7", headers={"x-user": "u_hdr"})
    [span] = captured.spans()
    assert span["attributes"][semconv.USER_ID] == "u_hdr"
    assert span["attributes"][semconv.SESSION_ID] == "s_hdr"
    [event] = captured.events()
    assert event["attributes"][semconv.USER_ID] == "u_hdr"


async def test_identify_inside_a_handler_tags_the_server_span(client: httpx.AsyncClient, captured: Captured) -> None:
    await client.get("/login")
    [span] = captured.spans()
    assert span["attributes"][semconv.USER_ID] == "u_login"
    [event] = captured.events()
    assert event["attributes"][semconv.SESSION_ID] == "s_login"


async def test_5xx_and_exceptions_set_status_error(client: httpx.AsyncClient, captured: Captured) -> None:
    assert (await client.get("/unavailable")).status_code == 503
    assert (await client.get("/fail")).status_code == 500
    spans = {span["name"]: span for span in captured.spans()}
    assert spans["GET /unavailable"]["status"] == "ERROR"
    assert spans["GET /unavailable"]["attributes"]["http.response.status_code"] == 503
    failed = spans["GET /fail"]
    assert failed["status"] == "ERROR"
    assert failed["attributes"][semconv.ERROR_TYPE] == "Boom"
    assert failed["attributes"]["http.response.status_code"] == 500
    assert [event["name"] for event in failed["events"]] == ["exception"]


async def test_instrumenting_twice_gives_one_span_with_the_latest_options(captured: Captured) -> None:
    app = instrument_fastapi(instrument_fastapi(make_app()), identify_request=_identity_from_header)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        await client.get("/items/1", headers={"x-user": "u_late"})
    [span] = captured.spans()
    assert span["attributes"][semconv.USER_ID] == "u_late"


async def test_unknown_route_is_named_by_method_only(client: httpx.AsyncClient, captured: Captured) -> None:
    assert (await client.get("/nope")).status_code == 404
    [span] = captured.spans()
    assert span["name"] == "GET"
    assert "http.route" not in span["attributes"]


def test_the_instrumented_app_is_still_a_fastapi_app(captured: Captured) -> None:
    app = instrument_fastapi(make_app())
    assert isinstance(app, FastAPI)
    assert type(app).__name__ == "FastAPI"
    assert trace.get_tracer_provider() is not None


async def test_request_error_handlers_run_inside_the_server_span(
    client: httpx.AsyncClient, captured: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    from instrumentation._internal import fastapi as fastapi_layer

    seen: list[tuple[str, str, str]] = []

    def handler(exc: Exception, scope: Mapping[str, Any]) -> None:
        span_context = trace.get_current_span().get_span_context()
        seen.append((type(exc).__name__, scope["path"], trace.format_trace_id(span_context.trace_id)))

    monkeypatch.setattr(fastapi_layer, "REQUEST_ERROR_HANDLERS", [handler])
    assert (await client.get("/fail")).status_code == 500
    assert (await client.get("/items/1")).status_code == 200
    [span] = [span for span in captured.spans() if span["name"] == "GET /fail"]
    assert seen == [("Boom", "/fail", span["trace_id"])]


async def test_every_request_is_one_request_duration_point_by_route_and_status(
    client: httpx.AsyncClient, captured: Captured
) -> None:
    """``http.server.request.duration`` (what the collector's http_error_rate rule reads): a raised error
    and a returned 503 are both server errors with an ``error.type``; a 404 has no route; health checks
    excluded from tracing are not counted."""
    for path in ("/items/1", "/items/2", "/fail", "/unavailable", "/nowhere", "/healthz"):
        await client.get(path)
    points = {
        (
            p["attributes"].get("http.route"),
            p["attributes"]["http.response.status_code"],
            p["attributes"].get("error.type"),
        ): p["count"]
        for p in captured.histogram_points("http.server.request.duration")
    }
    assert points == {
        ("/items/{item_id}", 200, None): 2,
        ("/fail", 500, "Boom"): 1,
        ("/unavailable", 503, "503"): 1,
        (None, 404, None): 1,
    }
    assert all(
        p["attributes"]["http.request.method"] == "GET"
        for p in captured.histogram_points("http.server.request.duration")
    )


@pytest.mark.parametrize(
    ("excluded_urls", "excluded", "traced"),
    [
        ("/health,/healthz", ["/health", "/healthz"], ["/health/", "/healthzz", "/x/health", "/"]),
        (" /ping , /static/.* ", ["/ping", "/static/app.js"], ["/ping/x", "/statics"]),
        (r"/items/\d+", ["/items/42"], ["/items/x", "/items/42/parts"]),
        ("", [], ["/health"]),
    ],
)
def test_excluded_urls_match_whole_paths(excluded_urls: str, excluded: list[str], traced: list[str]) -> None:
    from instrumentation._internal.fastapi import _compile_excluded

    is_excluded = _compile_excluded(excluded_urls)
    assert [path for path in excluded + traced if is_excluded is not None and is_excluded(path)] == excluded
