"""Every route of the app: one server span each, and an exception inside each reaches Sentry with
the request's trace id (a recording fake Sentry; the app sees only `instrumentation`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from instrumentation.testing import Captured, capture
from services.api import create_app
from services.api.app import EXCLUDED_URLS, ROUTERS
from services.api.dependencies import get_db
from services.settings import ServiceSettings
from services.worker import JobWorker
from tests.fakes.sentry import FakeSentry
from tests.integration.services.conftest import api_client, wav_body

pytestmark = pytest.mark.integration
MARKER = "injected-route-failure"


@dataclass
class Served:
    app: FastAPI
    client: httpx.Client
    captured: Captured
    sentry: FakeSentry
    headers: dict[str, str]
    ids: dict[str, str]


@pytest.fixture
def served(settings: ServiceSettings) -> Iterator[Served]:
    with FakeSentry() as sentry, capture(service_name="phonoglyph-api", sentry_dsn=sentry.dsn) as captured:
        app = create_app(settings)
        with api_client(app) as client:
            signup = client.post("/auth/signup", json={"email": "routes@example.test"}).json()
            headers = {"Authorization": f"Bearer {signup['token']}"}
            project_id = client.post("/projects", json={"name": "p"}, headers=headers).json()["project_id"]
            file_id = client.post(
                f"/projects/{project_id}/files", content=wav_body(), headers={**headers, "Content-Type": "audio/wav"}
            ).json()["file_id"]
            ids = {
                "project_id": project_id,
                "file_id": file_id,
                "stem_job_id": client.post(f"/files/{file_id}/stems", headers=headers).json()["job_id"],
                "analysis_job_id": client.post(f"/files/{file_id}/analysis", headers=headers).json()["job_id"],
                "render_id": client.post(f"/files/{file_id}/renders", headers=headers).json()["render_id"],
                "stem": "harmonic",
            }
            worker = JobWorker(app.state.db, settings)
            while worker.run_once():
                pass
            captured.clear()
            yield Served(app, client, captured, sentry, headers, ids)


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves: its OpenAPI paths, which must be
    exactly the routes of the routers it includes (nothing hidden from the schema)."""
    from_schema = sorted(
        (method.upper(), path) for path, operations in app.openapi()["paths"].items() for method in operations
    )
    from_routers = sorted(
        (method, route.path)
        for module in ROUTERS
        for route in module.router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    )
    assert from_schema == from_routers
    assert len(from_schema) >= 20
    return from_schema


def _concrete(path: str, ids: dict[str, str]) -> str:
    job_id = ids["stem_job_id"] if path.startswith("/stems/") else ids["analysis_job_id"]
    return path.format(**ids, job_id=job_id)


def _server_spans(captured: Captured, timeout_s: float = 5.0, expected: int = 0) -> list[dict[str, Any]]:
    """Server spans end just after their response is sent: poll until ``expected`` arrived."""
    deadline_s = time.monotonic() + timeout_s
    while True:
        spans = [span for span in captured.spans() if span["kind"] == "SERVER"]
        if len(spans) >= expected or time.monotonic() > deadline_s:
            return spans
        time.sleep(0.02)


def test_every_route_produces_one_server_span(served: Served) -> None:
    routes = _routes(served.app)
    requested = []
    for method, template in routes:
        path = _concrete(template, served.ids)
        answer = served.client.request(method, path, headers=served.headers)
        assert answer.status_code < 500, (method, path, answer.text)
        requested.append((method, template, path))
    traced = [r for r in requested if r[1] not in EXCLUDED_URLS.split(",")]
    spans = _server_spans(served.captured, expected=len(traced))
    by_request = {(span["attributes"]["http.request.method"], span["attributes"]["url.path"]): span for span in spans}
    assert len(spans) == len(by_request) == len(traced)  # exactly one span per traced request
    for method, template, path in traced:
        span = by_request[(method, path)]
        assert span["name"] == f"{method} {template}"
        assert span["attributes"]["http.route"] == template
    assert not [r for r in requested if r[1] == "/health" and (r[0], r[2]) in by_request]  # health: excluded


def test_an_exception_inside_every_route_reaches_sentry_with_the_request_trace(served: Served) -> None:
    def broken_db() -> None:
        raise RuntimeError(f"{MARKER}: the database is gone")

    served.app.dependency_overrides[get_db] = broken_db
    routes = _routes(served.app)
    for method, template in routes:
        answer = served.client.request(  # uvicorn drops the connection after an unhandled error: use a fresh one
            method,
            _concrete(template, served.ids),
            headers={**served.headers, "Connection": "close"},
        )
        assert answer.status_code == 500, (method, template, answer.status_code)
    traced = [route for route in routes if route[1] not in EXCLUDED_URLS.split(",")]
    spans = _server_spans(served.captured, expected=len(traced))
    trace_of = {(span["attributes"]["http.request.method"], span["attributes"]["http.route"]): span for span in spans}
    assert all(span["status"] == "ERROR" for span in spans)

    def events_with_marker(sentry: FakeSentry) -> list[dict[str, Any]]:
        return [
            event
            for event in sentry.events
            if any(MARKER in (value.get("value") or "") for value in event.get("exception", {}).get("values", []))
        ]

    assert served.sentry.wait_for(lambda sentry: len(events_with_marker(sentry)) >= len(routes), timeout_s=15)
    events = events_with_marker(served.sentry)
    assert served.sentry.errors == []
    assert len(events) == len(routes)  # one error event per route, none lost, none doubled
    events_by_trace = {event["contexts"]["trace"]["trace_id"]: event for event in events}
    assert len(events_by_trace) == len(routes)  # each error in its own trace
    for route in traced:
        event = events_by_trace.get(trace_of[route]["trace_id"])
        assert event is not None, f"no Sentry event in the trace of {route}"
        assert event["transaction"] == route[1]
        assert (event["request"]["method"], urlsplit(event["request"]["url"]).path) == (
            route[0],
            trace_of[route]["attributes"]["url.path"],
        )  # the request of this error, not one that came before it
    untraced = [route for route in routes if route not in traced]
    assert sorted(event["transaction"] for event in events if event["transaction"] in EXCLUDED_URLS.split(",")) == [
        path for _method, path in untraced
    ]
