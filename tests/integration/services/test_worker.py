"""The worker: crash recovery, failures as failed operations, and processing errors reaching Sentry
with the job's trace and audio context (a recording fake Sentry)."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace as otel_trace

from instrumentation import semconv
from services.settings import FaultSettings
from services.store import catalog, jobs
from services.store.database import Database
from services.worker import JobWorker, handlers
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


def _queue_stems(api: Api) -> tuple[str, str, str]:
    """(user id, file id, job id) of a stem separation queued through the api."""
    headers, member = api.member()
    file_id = api.upload(headers, api.project(headers)).json()["file_id"]
    job_id = api.client.post(f"/files/{file_id}/stems", headers=headers).json()["job_id"]
    return member["user_id"], file_id, job_id


def _outcomes(api: Api, operation: str) -> list[tuple[str, str | None]]:
    """Every outcome of ``operation`` that left the process: on its span, or as an outcome event record."""
    found = [
        (span["attributes"][semconv.OUTCOME], span["attributes"].get(semconv.ERROR_TYPE))
        for span in api.spans(**{semconv.OPERATION: operation})
    ]
    for suffix in ("completed", "failed"):
        found += [
            (suffix, event["attributes"].get(semconv.ERROR_TYPE)) for event in api.events(f"{operation}_{suffix}")
        ]
    return found


def _sentry_event_of(sentry: FakeSentry, error_type: str) -> dict[str, Any]:
    def matching(fake: FakeSentry) -> list[dict[str, Any]]:
        return [
            event
            for event in fake.events
            if [value["type"] for value in event.get("exception", {}).get("values", [])][-1:] == [error_type]
        ]

    assert sentry.wait_for(lambda fake: len(matching(fake)) >= 1), [e.get("exception") for e in sentry.events]
    (event,) = matching(sentry)
    return event


def test_a_job_that_ran_out_of_attempts_is_one_failed_operation_reported_to_sentry(
    sentry_api: tuple[Api, FakeSentry], caplog: pytest.LogCaptureFixture
) -> None:
    api, sentry = sentry_api
    user_id, file_id, job_id = _queue_stems(api)
    for _ in range(api.settings.job_max_attempts):  # each attempt's worker dies: its lease runs out
        with api.db.transaction() as conn:
            assert jobs.claim(conn, lease_s=-1.0, max_attempts=api.settings.job_max_attempts).id == job_id
    with caplog.at_level(logging.ERROR, logger="services.worker"):
        assert api.run_worker() == 1
    job = jobs.get_job(api.db.read(), job_id)
    assert (job.status, job.error_code) == ("failed", "attempts_exhausted")
    assert _outcomes(api, "stem_separation") == [("failed", "attempts_exhausted")]  # exactly one
    (span,) = api.spans(**{semconv.OPERATION: "stem_separation"})
    assert span["attributes"][semconv.JOB_ID] == job_id
    assert [r.levelname for r in caplog.records if "attempts_exhausted" in r.getMessage()] == ["ERROR"]
    event = _sentry_event_of(sentry, "attempts_exhausted")
    assert event["contexts"]["trace"]["trace_id"] == span["trace_id"]
    assert event["tags"]["operation"] == "stem_separation"
    assert event["user"]["id"] == user_id
    assert event["contexts"]["audio_processing"][semconv.FILE_ID] == file_id
    assert sentry.errors == []


def test_a_job_whose_stored_audio_is_missing_is_a_failed_operation_reported_to_sentry(
    sentry_api: tuple[Api, FakeSentry],
) -> None:
    api, sentry = sentry_api
    user_id, file_id, job_id = _queue_stems(api)
    Path(catalog.get_file(api.db.read(), file_id).path).unlink()
    assert api.run_worker() == 1
    assert jobs.get_job(api.db.read(), job_id).error_code == "file_missing"
    assert _outcomes(api, "stem_separation") == [("failed", "file_missing")]
    (span,) = api.spans(**{semconv.OPERATION: "stem_separation"})
    event = _sentry_event_of(sentry, "file_missing")
    assert (event["contexts"]["trace"]["trace_id"], event["user"]["id"]) == (span["trace_id"], user_id)
    assert event["contexts"]["audio_processing"][semconv.JOB_ID] == job_id


def test_a_job_whose_file_record_is_gone_is_a_failed_operation(api: Api) -> None:
    _user_id, file_id, job_id = _queue_stems(api)
    with closing(sqlite3.connect(api.settings.db_path, isolation_level=None)) as conn:  # foreign keys off
        conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
    assert api.run_worker() == 1
    assert jobs.get_job(api.db.read(), job_id).error_code == "file_not_found"
    assert _outcomes(api, "stem_separation") == [("failed", "file_not_found")]


def test_a_locked_job_store_is_retried_with_a_log_line(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _user_id, _file_id, job_id = _queue_stems(api)
    real_claim, failures = jobs.claim, ["database is locked", "database is busy"]

    def flaky_claim(*args: Any, **kwargs: Any) -> jobs.Job | None:
        if failures:
            raise sqlite3.OperationalError(failures.pop(0))
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(jobs, "claim", flaky_claim)
    with caplog.at_level(logging.WARNING, logger="services.worker"):
        assert api.run_worker() == 1
    assert jobs.get_job(api.db.read(), job_id).status == "completed"
    retries = [record.getMessage() for record in caplog.records if "retry" in record.getMessage()]
    assert len(retries) == 2 and "database is locked" in retries[0] and "database is busy" in retries[1]


def test_a_job_store_locked_for_longer_than_the_budget_stops_the_worker(api: Api) -> None:
    settings = dataclasses.replace(api.settings, store_retry_budget_s=0.3)
    worker = JobWorker(Database(settings.db_path, busy_timeout_s=0.02), settings)
    holder = sqlite3.connect(settings.db_path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock and never lets go
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            worker.run_once()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert worker.run_once() is False  # the lock released: the worker's connection is usable again


def test_a_store_error_that_is_not_transient_is_not_retried(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def broken_claim(*_args: Any, **_kwargs: Any) -> None:
        calls.append(1)
        raise sqlite3.OperationalError("no such table: jobs")

    monkeypatch.setattr(jobs, "claim", broken_claim)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        JobWorker(api.db, api.settings).run_once()
    assert len(calls) == 1


def test_the_separation_failure_fault_switch_fails_stem_separations(api: Api) -> None:
    faulty = dataclasses.replace(api.settings, faults=FaultSettings(separation_failure_rate=1.0))
    _user_id, _file_id, job_id = _queue_stems(api)
    assert JobWorker(api.db, faulty).run_once()
    assert jobs.get_job(api.db.read(), job_id).error_code == "fault_injected"
    assert _outcomes(api, "stem_separation") == [("failed", "fault_injected")]


def test_the_worker_fault_switches_are_off_by_default(api: Api) -> None:
    assert api.settings.faults == FaultSettings()
    slept: list[float] = []
    _user_id, _file_id, job_id = _queue_stems(api)
    worker = JobWorker(api.db, api.settings, sleep=slept.append)
    assert worker.run_once()
    assert jobs.get_job(api.db.read(), job_id).status == "completed"
    assert slept == []


def test_the_operation_delay_fault_switch_delays_that_operation_inside_its_span(api: Api) -> None:
    faults = FaultSettings(operation="stem_separation", operation_delay_s=0.25)
    slept: list[tuple[float, str | None]] = []

    def sleep(seconds: float) -> None:  # records which operation was current when it slept
        slept.append((seconds, otel_trace.get_current_span().attributes.get(semconv.OPERATION)))

    _user_id, _file_id, job_id = _queue_stems(api)
    headers, _member = api.member("bo@example.test")
    other_file = api.upload(headers, api.project(headers)).json()["file_id"]
    assert api.client.post(f"/files/{other_file}/analysis", headers=headers).status_code == 202
    worker = JobWorker(api.db, dataclasses.replace(api.settings, faults=faults), sleep=sleep)
    assert worker.run_once() and worker.run_once()
    assert slept == [(0.25, "stem_separation")]  # not the analysis
    assert jobs.get_job(api.db.read(), job_id).status == "completed"


def test_an_attempt_whose_job_was_taken_over_writes_nothing(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _user_id, _file_id, job_id = _queue_stems(api)
    real_separate = handlers.HANDLERS["stem_separation"]

    def stalled_past_its_lease(*args: Any) -> dict[str, Any]:
        # meanwhile the lease ran out and another worker claimed the job (attempt 2)
        with closing(sqlite3.connect(api.settings.db_path, isolation_level=None)) as other:
            other.execute("UPDATE jobs SET lease_expires_at = 0 WHERE id = ?", (job_id,))
        with api.db.transaction() as conn:
            assert jobs.claim(conn, lease_s=60.0, max_attempts=3).attempts == 2
        return real_separate(*args)

    monkeypatch.setitem(handlers.HANDLERS, "stem_separation", stalled_past_its_lease)
    with caplog.at_level(logging.WARNING, logger="services.worker"):
        assert JobWorker(api.db, api.settings).run_once()
    job = jobs.get_job(api.db.read(), job_id)
    assert (job.status, job.attempts, job.result) == ("running", 2, None)  # attempt 2's to finish
    assert any("lost its lease" in record.getMessage() for record in caplog.records)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]  # not a job failure
    assert _outcomes(api, "stem_separation") == [("abandoned", None)]  # no analytics outcome: attempt 2 reports it


def test_a_retried_attempt_is_not_a_new_start(api: Api) -> None:
    _user_id, _file_id, job_id = _queue_stems(api)
    with api.db.transaction() as conn:  # a first attempt died
        assert jobs.claim(conn, lease_s=-1.0, max_attempts=3).id == job_id
    assert api.run_worker() == 1
    assert api.events("stem_separation_started") == []
    assert _outcomes(api, "stem_separation") == [("completed", None)]


def test_a_renewal_that_finds_the_job_taken_stops_the_attempt_before_its_work(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    _user_id, _file_id, job_id = _queue_stems(api)
    renewals: list[bool] = []
    refused = threading.Event()
    real_renew = jobs.renew

    def recorded_renew(*args: Any, **kwargs: Any) -> bool:
        held = real_renew(*args, **kwargs)
        renewals.append(held)
        if not held:
            refused.set()
        return held

    def taken_over_while_waiting(_delay_s: float) -> None:  # the operation-delay fault switch's wait
        with api.db.transaction() as conn:
            conn.execute("UPDATE jobs SET lease_expires_at = 0 WHERE id = ?", (job_id,))
            assert jobs.claim(conn, lease_s=60.0, max_attempts=3).attempts == 2
        assert refused.wait(10)  # the heartbeat's next renewal finds the job taken
        for thread in threading.enumerate():  # and its thread ends once it has said so
            if thread.name == f"lease-{job_id}":
                thread.join(10)

    def must_not_run(*_args: Any) -> dict[str, Any]:
        raise AssertionError("an attempt that lost its job started its work")

    monkeypatch.setattr(jobs, "renew", recorded_renew)
    monkeypatch.setitem(handlers.HANDLERS, "stem_separation", must_not_run)
    settings = dataclasses.replace(
        api.settings, job_lease_s=0.3, faults=FaultSettings(operation="stem_separation", operation_delay_s=1.0)
    )
    with caplog.at_level(logging.WARNING, logger="services.worker"):
        assert JobWorker(api.db, settings, sleep=taken_over_while_waiting).run_once()
    assert renewals[-1] is False
    job = jobs.get_job(api.db.read(), job_id)
    assert (job.status, job.attempts, job.result) == ("running", 2, None)
    assert any("lost its lease;" in record.getMessage() for record in caplog.records)
    assert _outcomes(api, "stem_separation") == [("abandoned", None)]
