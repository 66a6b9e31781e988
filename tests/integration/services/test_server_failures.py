"""Server-side failures of the api reach Sentry with the request's context; a 4xx never does.

Also the api's fault switch (``PHONOGLYPH_FAULT_HTTP_5XX_RATE``) and the job-queue gauges.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from instrumentation.testing import capture
from services.api import create_app
from services.api.dependencies import get_db
from services.settings import FaultSettings, ServiceSettings
from services.store import jobs
from services.store.metrics import JOB_KIND, JOBS_OLDEST_QUEUED_AGE, JOBS_ORPHANED, JOBS_QUEUED
from tests.fakes.sentry import FakeSentry
from tests.integration.services.conftest import Api, api_client

pytestmark = pytest.mark.integration
CLOSE = {"Connection": "close"}  # uvicorn drops the connection after an error left the app: a fresh one each


@contextmanager
def _served(settings: ServiceSettings) -> Iterator[tuple[Api, FakeSentry]]:
    with FakeSentry() as sentry, capture(service_name="phonoglyph-api", sentry_dsn=sentry.dsn) as captured:
        app = create_app(settings)
        with api_client(app) as client:
            yield Api(client, captured, settings, app.state.db), sentry


def _server_span(api: Api, method: str, path: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """The one server span of that request (it ends just after the response is sent: poll for it)."""
    deadline_s = time.monotonic() + timeout_s
    while True:
        matches = [s for s in api.spans(**{"http.request.method": method, "url.path": path}) if s["kind"] == "SERVER"]
        if matches or time.monotonic() > deadline_s:
            break
        time.sleep(0.02)
    assert len(matches) == 1, matches
    return matches[0]


def _exception_types(event: dict[str, Any]) -> list[str]:
    return [value["type"] for value in event.get("exception", {}).get("values", [])]


def test_billing_not_configured_is_a_503_reported_to_sentry_and_a_4xx_is_not(settings: ServiceSettings) -> None:
    with _served(dataclasses.replace(settings, billing_secret=None)) as (api, sentry):
        assert api.client.get("/credits").status_code == 401  # a client error first: never reported
        answer = api.client.post("/billing/webhook", content=b"{}", headers=CLOSE)
        assert (answer.status_code, answer.json()["error"]["code"]) == (503, "billing_not_configured")
        span = _server_span(api, "POST", "/billing/webhook")
        # events leave in the order they were captured: had the 401 been reported, it would be here first
        assert sentry.wait_for(lambda fake: len(fake.events) >= 1)
        (event,) = sentry.events
        assert sentry.errors == []
    assert _exception_types(event) == ["billing_not_configured"]
    assert event["transaction"] == "/billing/webhook"
    assert event["request"]["method"] == "POST"
    assert event["contexts"]["trace"]["trace_id"] == span["trace_id"]
    assert (span["status"], span["attributes"]["error.type"]) == ("ERROR", "billing_not_configured")
    assert span["attributes"]["http.response.status_code"] == 503


def test_an_unexpected_error_is_answered_500_in_the_error_shape_without_its_message(settings: ServiceSettings) -> None:
    def broken_db() -> None:
        raise RuntimeError("secret internals: /var/lib/db")

    with FakeSentry() as sentry, capture(service_name="phonoglyph-api", sentry_dsn=sentry.dsn):
        app = create_app(settings)
        app.dependency_overrides[get_db] = broken_db
        with api_client(app) as client:
            answer = client.get("/credits", headers={"Authorization": "Bearer t_nobody", **CLOSE})
            assert answer.status_code == 500
            assert answer.json() == {
                "error": {"code": "internal_error", "message": "an unexpected error; it has been reported"}
            }
            assert sentry.wait_for(lambda fake: len(fake.events) >= 1)
    (event,) = sentry.events
    assert _exception_types(event) == ["RuntimeError"]


def test_the_http_5xx_fault_switch_fails_its_route_family_only(settings: ServiceSettings) -> None:
    faulty = dataclasses.replace(settings, faults=FaultSettings(http_5xx_rate=1.0, http_5xx_route="/projects"))
    with _served(faulty) as (api, sentry):
        headers, _member = api.member()  # /auth: not in the family
        answer = api.client.post("/projects", json={"name": "demo"}, headers={**headers, **CLOSE})
        assert (answer.status_code, answer.json()["error"]["code"]) == (500, "fault_injected")
        span = _server_span(api, "POST", "/projects")
        assert (span["attributes"]["http.route"], span["attributes"]["error.type"]) == ("/projects", "fault_injected")
        assert api.client.get("/credits", headers=headers).status_code == 200
        assert sentry.wait_for(lambda fake: len(fake.events) >= 1)
    assert [_exception_types(event) for event in sentry.events] == [["fault_injected"]]


def test_the_http_5xx_fault_switch_is_off_by_default(api: Api) -> None:
    assert ServiceSettings.from_env({}).faults == FaultSettings()
    assert api.settings.faults.http_5xx_rate == 0.0
    headers, _member = api.member()
    for _ in range(5):
        assert api.client.post("/projects", json={"name": "demo"}, headers=headers).status_code == 201


def _gauge(api: Api, name: str) -> dict[str, float]:
    data = api.captured.metric_reader.get_metrics_data()
    points: dict[str, float] = {}
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    points.update({point.attributes[JOB_KIND]: point.value for point in metric.data.data_points})
    return points


def test_the_job_queue_depth_and_age_are_gauges_by_kind(api: Api) -> None:
    headers, _member = api.member()
    file_id = api.upload(headers, api.project(headers)).json()["file_id"]
    created_before_s = time.time()
    for path in (f"/files/{file_id}/stems", f"/files/{file_id}/stems", f"/files/{file_id}/analysis"):
        assert api.client.post(path, headers=headers).status_code == 202
    assert _gauge(api, JOBS_QUEUED) == {"stem_separation": 2, "audio_analysis": 1, "render": 0}
    ages = _gauge(api, JOBS_OLDEST_QUEUED_AGE)
    assert ages["render"] == 0.0
    assert 0.0 <= ages["stem_separation"] <= time.time() - created_before_s + 1.0
    with api.db.transaction() as conn:  # a worker claims one, then dies: its lease is already over
        jobs.claim(conn, lease_s=-1.0, max_attempts=3)
    assert _gauge(api, JOBS_ORPHANED) == {"stem_separation": 1, "audio_analysis": 0, "render": 0}
    assert _gauge(api, JOBS_QUEUED) == {"stem_separation": 1, "audio_analysis": 1, "render": 0}
    assert api.run_worker() == 3
    assert _gauge(api, JOBS_QUEUED) == {"stem_separation": 0, "audio_analysis": 0, "render": 0}
    assert set(_gauge(api, JOBS_OLDEST_QUEUED_AGE).values()) == {0.0}
    assert set(_gauge(api, JOBS_ORPHANED).values()) == {0}
