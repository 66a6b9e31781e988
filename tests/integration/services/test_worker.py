"""The worker: crash recovery, failures as failed operations, and processing errors reaching Sentry
with the job's trace and audio context (a recording fake Sentry)."""

from __future__ import annotations

from typing import Any

import pytest

from instrumentation import semconv
from services.store import jobs
from services.worker import handlers
from tests.fakes.sentry import FakeSentry
from tests.integration.services.conftest import Api

pytestmark = pytest.mark.integration


def test_a_job_whose_worker_died_is_run_again(api: Api) -> None:
    headers, _ = api.member()
    file_id = api.upload(headers, api.project(headers)).json()["file_id"]
    job_id = api.client.post(f"/files/{file_id}/analysis", headers=headers).json()["job_id"]
    with api.db.transaction() as conn:  # a worker claims it, then dies: its lease runs out
        assert jobs.claim(conn, lease_s=-1.0, max_attempts=3).id == job_id
    assert api.client.get(f"/analysis/{job_id}", headers=headers).json()["status"] == "running"
    assert api.run_worker() == 1
    assert api.client.get(f"/analysis/{job_id}", headers=headers).json()["status"] == "completed"
    (span,) = api.spans(**{semconv.OPERATION: "audio_analysis"})
    assert (span["attributes"]["phonoglyph.job.attempt"], span["attributes"][semconv.OUTCOME]) == (2, "completed")


def test_an_unexpected_processing_error_fails_the_job_and_its_operation(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any) -> dict[str, Any]:
        raise ZeroDivisionError("the separation diverged")

    monkeypatch.setitem(handlers.HANDLERS, "stem_separation", broken)
    headers, _ = api.member()
    file_id = api.upload(headers, api.project(headers)).json()["file_id"]
    job_id = api.client.post(f"/files/{file_id}/stems", headers=headers).json()["job_id"]
    assert api.run_worker() == 1
    job = api.client.get(f"/stems/{job_id}", headers=headers).json()
    assert (job["status"], job["error"]["code"]) == ("failed", "processing_error")
    (span,) = api.spans(**{semconv.OPERATION: "stem_separation"})
    assert (span["attributes"][semconv.OUTCOME], span["attributes"][semconv.ERROR_TYPE]) == (
        "failed",
        "ZeroDivisionError",
    )
    assert span["status"] == "ERROR"


def test_a_processing_error_reaches_sentry_with_the_job_context(
    sentry_api: tuple[Api, FakeSentry], monkeypatch: pytest.MonkeyPatch
) -> None:
    api, sentry = sentry_api

    def broken(*_args: Any) -> dict[str, Any]:
        raise ZeroDivisionError("the render diverged")

    monkeypatch.setitem(handlers.HANDLERS, "render", broken)
    headers, member = api.member()
    file_id = api.upload(headers, api.project(headers)).json()["file_id"]
    render_id = api.client.post(f"/files/{file_id}/renders", headers=headers).json()["render_id"]
    assert api.run_worker() == 1
    assert api.client.get("/credits", headers=headers).json()["balance"] == api.settings.signup_credits  # refunded
    (span,) = api.spans(**{semconv.OPERATION: "render"})
    assert sentry.wait_for(lambda fake: len(fake.events) >= 1)
    (event,) = sentry.events
    assert [value["type"] for value in event["exception"]["values"]] == ["ZeroDivisionError"]
    assert event["contexts"]["trace"]["trace_id"] == span["trace_id"]
    assert event["tags"]["operation"] == "render"
    assert event["user"]["id"] == member["user_id"]
    audio = event["contexts"]["audio_processing"]
    assert (audio[semconv.RENDER_ID], audio[semconv.FILE_ID], audio[semconv.AUDIO_DURATION_S]) == (
        render_id,
        file_id,
        2.0,
    )
    assert sentry.errors == []
