"""Server spans for every kind of route: one span per request, named by its full route template.

Include prefixes at any depth, the same router under two prefixes, mounted FastAPI sub-apps (instrumented
themselves, as the distro instruments every app: they pass through), static files, a WSGI app, the docs,
websockets and a streaming response (routes_app.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from starlette.websockets import WebSocketDisconnect

from instrumentation import instrument_fastapi
from instrumentation._internal import fastapi as fastapi_layer
from instrumentation.testing import Captured
from tests.unit.instrumentation import routes_app

with warnings.catch_warnings():  # "install httpx2": the test client works as it is
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN_ID = "b7ad6b7169203331"


def _instrument_every_app(app: FastAPI) -> FastAPI:
    """As the distro does: every FastAPI app, mounted ones included, is instrumented."""
    for route in app.routes:
        inner = getattr(route, "app", None)
        if isinstance(inner, FastAPI):
            _instrument_every_app(inner)
    return instrument_fastapi(app)


@pytest.fixture
def app(captured: Captured) -> FastAPI:
    return _instrument_every_app(routes_app.make_app())


@pytest.fixture
def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://testserver"
    )


async def _one_span(client: httpx.AsyncClient, captured: Captured, method: str, path: str, **kwargs: Any) -> Any:
    captured.clear()
    response = await client.request(method, path, **kwargs)
    spans = captured.spans()
    assert len(spans) == 1, [(s["name"], s["kind"]) for s in spans]
    [span] = spans
    assert span["kind"] == "SERVER"
    return response, span


@pytest.mark.parametrize(
    ("method", "path", "route", "status"),
    [
        ("POST", "/api/users/", "/api/users/", 200),
        ("GET", "/api/users/u1", "/api/users/{user_id}", 200),
        ("GET", "/api/users/u1/fail", "/api/users/{user_id}/fail", 500),
        ("POST", "/admin/", "/admin/", 200),
        ("GET", "/v1/things/3", "/v1/things/{thing_id}", 200),
        ("GET", "/v2/things/3", "/v2/things/{thing_id}", 200),
        ("GET", "/v2/things/notanint", "/v2/things/{thing_id}", 422),
        ("GET", "/items/7", "/items/{item_id}", 200),
        ("GET", "/sub/items/7", "/sub/items/{item_id}", 200),
        ("GET", "/sub/fail", "/sub/fail", 500),
        ("GET", "/sub/routed/x", "/sub/routed/{name}", 200),
        ("GET", "/sub/deeper/leaf/9", "/sub/deeper/leaf/{leaf_id}", 200),
        ("GET", "/openapi.json", "/openapi.json", 200),
        ("GET", "/docs", "/docs", 200),
        ("GET", "/sub/openapi.json", "/sub/openapi.json", 200),
        ("GET", "/static/site.css", "/static/{path:path}", 200),
        ("GET", "/static/missing.css", "/static/{path:path}", 404),
        ("GET", "/legacy/anything", "/legacy/{path:path}", 200),
        ("DELETE", "/items/7", "/items/{item_id}", 405),
    ],
)
async def test_every_route_kind_is_one_span_named_by_its_full_template(
    client: httpx.AsyncClient, captured: Captured, method: str, path: str, route: str, status: int
) -> None:
    response, span = await _one_span(client, captured, method, path)
    assert response.status_code == status
    assert span["name"] == f"{method} {route}"
    assert span["attributes"]["http.route"] == route
    assert span["attributes"]["url.path"] == path
    assert span["attributes"]["http.response.status_code"] == status
    [point] = captured.histogram_points("http.server.request.duration")
    assert point["attributes"]["http.route"] == route


@pytest.mark.parametrize("path", ["/nowhere", "/sub/nowhere", "/api/users/u1/nowhere"])
async def test_no_route_no_template(client: httpx.AsyncClient, captured: Captured, path: str) -> None:
    response, span = await _one_span(client, captured, "GET", path)
    assert response.status_code == 404
    assert span["name"] == "GET"
    assert "http.route" not in span["attributes"]


async def test_a_mounted_app_joins_the_callers_trace_once(client: httpx.AsyncClient, captured: Captured) -> None:
    _, span = await _one_span(
        client, captured, "GET", "/sub/items/1", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"}
    )
    assert (span["trace_id"], span["parent_span_id"]) == (TRACE_ID, PARENT_SPAN_ID)


async def test_error_handlers_see_the_full_template_and_the_request_as_sent(
    client: httpx.AsyncClient, captured: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str, str, str]] = []

    def handler(exc: Exception, scope: Mapping[str, Any]) -> None:
        trace_id = trace.format_trace_id(trace.get_current_span().get_span_context().trace_id)
        seen.append((scope["route"].path, scope["root_path"] + scope["path"], type(exc).__name__, trace_id))

    monkeypatch.setattr(fastapi_layer, "REQUEST_ERROR_HANDLERS", [handler])
    _, span = await _one_span(client, captured, "GET", "/api/users/u1/fail")
    _, sub_span = await _one_span(client, captured, "GET", "/sub/fail")
    assert seen == [
        ("/api/users/{user_id}/fail", "/api/users/u1/fail", "Failure", span["trace_id"]),
        ("/sub/fail", "/sub/fail", "Failure", sub_span["trace_id"]),
    ]


async def test_a_streaming_response_is_covered_by_its_span(client: httpx.AsyncClient, captured: Captured) -> None:
    routes_app.STREAM_DONE_NS.clear()
    response, span = await _one_span(client, captured, "GET", "/stream")
    assert response.text == "".join(f"chunk {i}\n" for i in range(routes_app.STREAM_CHUNKS))
    assert span["name"] == "GET /stream"
    assert span["attributes"]["http.response.status_code"] == 200
    assert span["status"] == "UNSET"
    [done_ns] = routes_app.STREAM_DONE_NS
    assert span["start_time_ns"] < done_ns <= span["end_time_ns"]


# -- websockets (Starlette's TestClient: it speaks the ASGI websocket protocol) ---------------------------


def _websocket_spans(captured: Captured) -> list[dict[str, Any]]:
    return [span for span in captured.spans() if span["name"].startswith("WEBSOCKET")]


def test_a_websocket_connection_is_one_span_named_by_route_with_its_close_code(
    app: FastAPI, captured: Captured
) -> None:
    with TestClient(app) as client:
        with client.websocket_connect("/ws/lobby") as websocket:
            websocket.send_text("hi")
            assert websocket.receive_text() == "lobby: hi"
            websocket.send_text("bye")
            with pytest.raises(WebSocketDisconnect):
                websocket.receive_text()
    [span] = captured.spans()
    assert span["name"] == "WEBSOCKET /ws/{room}"
    assert span["kind"] == "SERVER"
    assert span["status"] == "UNSET"
    attributes = span["attributes"]
    assert attributes["http.route"] == "/ws/{room}"
    assert attributes["url.path"] == "/ws/lobby"
    assert attributes["url.scheme"] == "ws"
    assert attributes["websocket.close.code"] == 1000
    assert attributes["http.response.status_code"] == 101
    assert captured.histogram_points("http.server.request.duration") == []  # connections are not requests


@pytest.mark.parametrize("code", [1000, 1001])
def test_a_client_that_leaves_is_no_error(app: FastAPI, captured: Captured, code: int) -> None:
    seen: list[Exception] = []
    fastapi_layer.REQUEST_ERROR_HANDLERS.append(lambda exc, scope: seen.append(exc))
    try:
        with TestClient(app) as client:
            with pytest.raises(WebSocketDisconnect):  # the handler lets it out, as it does bare
                with client.websocket_connect("/ws/lobby") as websocket:
                    websocket.close(code)
            with client.websocket_connect("/ws-quiet/lobby") as websocket:
                websocket.close(code)
    finally:
        fastapi_layer.REQUEST_ERROR_HANDLERS.pop()
    spans = _websocket_spans(captured)
    assert [s["name"] for s in spans] == ["WEBSOCKET /ws/{room}", "WEBSOCKET /ws-quiet/{room}"]
    for span in spans:
        assert span["status"] == "UNSET"
        assert span["attributes"]["websocket.close.code"] == code
        assert "error.type" not in span["attributes"]
        assert span["events"] == []
    assert seen == []


def test_a_websocket_handler_that_fails_is_an_error(app: FastAPI, captured: Captured) -> None:
    seen: list[tuple[str, str]] = []
    fastapi_layer.REQUEST_ERROR_HANDLERS.append(
        lambda exc, scope: seen.append((type(exc).__name__, scope["route"].path))
    )
    try:
        with TestClient(app) as client, pytest.raises(routes_app.Failure):
            with client.websocket_connect("/ws/lobby") as websocket:
                websocket.send_text("fail")
                websocket.receive_text()
    finally:
        fastapi_layer.REQUEST_ERROR_HANDLERS.pop()
    [span] = _websocket_spans(captured)
    assert span["status"] == "ERROR"
    assert span["attributes"]["error.type"] == "Failure"
    assert seen == [("Failure", "/ws/{room}")]


def test_a_websocket_route_of_an_included_router_has_its_prefix(app: FastAPI, captured: Captured) -> None:
    with TestClient(app) as client:
        with client.websocket_connect("/api/users/u1/live") as websocket:
            assert websocket.receive_text() == "u1"
    [span] = _websocket_spans(captured)
    assert span["name"] == "WEBSOCKET /api/users/{user_id}/live"


async def test_an_app_mounted_in_an_uninstrumented_app_names_its_route_with_the_mount(captured: Captured) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    inner = FastAPI()

    @inner.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    outer = Starlette(routes=[Mount("/inner", app=instrument_fastapi(inner))])
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/inner/items/1")).status_code == 200
    [span] = captured.spans()
    assert span["name"] == "GET /inner/items/{item_id}"


@pytest.mark.skipif(not hasattr(FastAPI, "frontend"), reason="app.frontend() is FastAPI >= 0.16x")
async def test_a_frontend_build_is_named_by_its_template(captured: Captured) -> None:
    app = FastAPI()

    @app.get("/api/ping")
    async def ping() -> dict[str, str]:
        return {"ping": "pong"}

    app.frontend("/", directory=routes_app.STATIC_DIR)
    transport = httpx.ASGITransport(app=instrument_fastapi(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/site.css")).status_code == 200
        assert (await client.get("/api/ping")).status_code == 200
    assert [span["name"] for span in captured.spans()] == ["GET /{path}", "GET /api/ping"]
