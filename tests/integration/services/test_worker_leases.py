"""Audio workers as real processes on one database: a job longer than its lease runs once (the lease
is renewed while it works), a killed attempt's job is taken over and reported once, and a write lock
held by another connection for a while is waited out instead of stopping the worker.

Analytics are counted per job: ``<kind>_started`` and the outcome (``<kind>_completed`` /
``<kind>_failed``), whether the outcome left as the sampled span or as an event record."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from instrumentation import semconv
from services.audio.wav import encode
from services.store import accounts, catalog, jobs
from services.store.database import Database
from tests.fakes.otlp import otlp_capture_server

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[3]
TIMEOUT_S = 60.0
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _queue_job(db: Database, data_dir: Path, *, duration_s: float = 1.0) -> str:
    t_s = np.arange(int(duration_s * 22050)) / 22050
    path = data_dir / "files" / f"{len(list(data_dir.glob('files/*')))}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(0.3 * np.sin(2 * np.pi * 330 * t_s), 22050))
    with db.transaction() as conn:
        user_id = accounts.create_user(conn, email=None, name=None, guest=True, credits=0)
        project_id = catalog.create_project(conn, user_id=user_id, name="p")
        record = catalog.FileRecord(
            id=catalog.new_file_id(),
            project_id=project_id,
            user_id=user_id,
            filename=path.name,
            path=str(path),
            size_bytes=path.stat().st_size,
            duration_s=duration_s,
            sample_rate_hz=22050,
            channels=1,
        )
        catalog.insert_file(conn, record)
        carrier = {"traceparent": TRACEPARENT, "baggage": f"user.id={user_id}"}
        return jobs.enqueue(conn, kind="stem_separation", file_id=record.id, user_id=user_id, carrier=carrier).id


def _wait_until(predicate: Any, timeout_s: float = TIMEOUT_S) -> bool:
    deadline_s = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline_s:
            return False
        time.sleep(0.02)
    return True


def _status(db: Database, job_id: str) -> str:
    return jobs.get_job(db.read(), job_id).status


@contextmanager
def _workers(tmp_path: Path, endpoint: str, count: int, **env_extra: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {
        **os.environ,
        "PHONOGLYPH_DB": str(tmp_path / "phonoglyph.db"),
        "PHONOGLYPH_DATA_DIR": str(tmp_path / "data"),
        "PHONOGLYPH_WORKER_POLL_INTERVAL_S": "0.05",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "SENTRY_DSN": "",
        **env_extra,
    }
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(count):
            with open(tmp_path / f"worker{index}.log", "wb") as log:
                workers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "services.worker"], cwd=REPO_ROOT, env=env, stdout=log, stderr=log
                    )
                )
        yield workers
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)


def _stop(workers: list[subprocess.Popen[bytes]]) -> list[int]:
    """SIGTERM every live worker (each flushes its telemetry) and return the exit codes of those."""
    live = [worker for worker in workers if worker.poll() is None]
    for worker in live:
        worker.send_signal(signal.SIGTERM)
    return [worker.wait(30) for worker in live]


def _analytics(snapshot: dict[str, list[dict[str, Any]]], job_id: str) -> list[str]:
    """The analytics events a job gave: started records, and outcomes as spans or as records."""
    names = []
    for span in snapshot["spans"]:
        attributes = span["attributes"]
        if attributes.get(semconv.JOB_ID) == job_id and attributes.get(semconv.OPERATION):
            names.append(f"{attributes[semconv.OPERATION]}_{attributes[semconv.OUTCOME]}")
    for record in snapshot["log_records"]:
        if record["attributes"].get(semconv.JOB_ID) == job_id and record.get("event_name"):
            names.append(record["event_name"])
    return sorted(names)


def _assert_once_per_job(snapshot: dict[str, list[dict[str, Any]]], job_id: str) -> None:
    """One outcome; a start only from the first attempt (the killed one's, if it left before the kill)."""
    names = _analytics(snapshot, job_id)
    assert [name for name in names if not name.endswith("_started")] == ["stem_separation_completed"]
    starts = [
        record
        for record in snapshot["log_records"]
        if record["attributes"].get(semconv.JOB_ID) == job_id and record.get("event_name", "").endswith("_started")
    ]
    assert [record["attributes"]["phonoglyph.job.attempt"] for record in starts] in ([], [1])


def test_a_job_longer_than_its_lease_runs_once_with_two_workers(tmp_path: Path) -> None:
    db = Database(tmp_path / "phonoglyph.db")
    job_id = _queue_job(db, tmp_path / "data")
    with otlp_capture_server() as (endpoint, capture):
        with _workers(
            tmp_path,
            endpoint,
            2,
            PHONOGLYPH_JOB_LEASE_S="1.5",
            # the job takes over three leases: without renewal the second worker would take it over
            PHONOGLYPH_FAULT_OPERATION="stem_separation",
            PHONOGLYPH_FAULT_OPERATION_DELAY_S="5",
        ) as workers:
            assert _wait_until(lambda: _status(db, job_id) == "completed")
            assert _stop(workers) == [0, 0]
        snapshot = capture.snapshot()
    job = jobs.get_job(db.read(), job_id)
    assert (job.status, job.attempts) == ("completed", 1)
    assert _analytics(snapshot, job_id) == ["stem_separation_completed", "stem_separation_started"]
    logs = "".join((tmp_path / f"worker{index}.log").read_text() for index in range(2))
    assert "lost its lease" not in logs


def test_a_killed_attempt_is_taken_over_and_reported_once(tmp_path: Path) -> None:
    db = Database(tmp_path / "phonoglyph.db")
    job_id = _queue_job(db, tmp_path / "data")
    with otlp_capture_server() as (endpoint, capture):
        env = {
            "PHONOGLYPH_JOB_LEASE_S": "1.5",
            "PHONOGLYPH_FAULT_OPERATION": "stem_separation",
            "PHONOGLYPH_FAULT_OPERATION_DELAY_S": "3",
        }
        with _workers(tmp_path, endpoint, 1, **env) as (first,):
            assert _wait_until(lambda: _status(db, job_id) == "running")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        assert jobs.get_job(db.read(), job_id).attempts == 1
        with _workers(tmp_path, endpoint, 2, **env) as workers:
            assert _wait_until(lambda: _status(db, job_id) == "completed")
            assert _stop(workers) == [0, 0]
        snapshot = capture.snapshot()
    assert jobs.get_job(db.read(), job_id).attempts == 2
    # the second attempt is not a new start, and reports the one outcome
    _assert_once_per_job(snapshot, job_id)
    (span,) = [s for s in snapshot["spans"] if s["attributes"].get(semconv.JOB_ID) == job_id]
    assert span["attributes"]["phonoglyph.job.attempt"] == 2


def test_a_killed_workers_job_is_taken_over_on_its_host_before_its_lease_ends(tmp_path: Path) -> None:
    db = Database(tmp_path / "phonoglyph.db")
    job_id = _queue_job(db, tmp_path / "data")
    with otlp_capture_server() as (endpoint, capture):
        # a lease far longer than the wait below: only seeing that the process is gone frees the job
        env = {
            "PHONOGLYPH_JOB_LEASE_S": "3600",
            "PHONOGLYPH_FAULT_OPERATION": "stem_separation",
            "PHONOGLYPH_FAULT_OPERATION_DELAY_S": "2",
        }
        with _workers(tmp_path, endpoint, 1, **env) as (first,):
            assert _wait_until(lambda: _status(db, job_id) == "running")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        with _workers(tmp_path, endpoint, 1, **env) as (second,):
            assert _wait_until(lambda: _status(db, job_id) == "completed", timeout_s=TIMEOUT_S)
            assert _stop([second]) == [0]
        snapshot = capture.snapshot()
    assert jobs.get_job(db.read(), job_id).attempts == 2
    _assert_once_per_job(snapshot, job_id)


LOCK_ENV = {
    "PHONOGLYPH_DB_BUSY_TIMEOUT_S": "0.05",  # SQLite's own busy wait is short: the lock outlasts many of them
    "PHONOGLYPH_JOB_LEASE_S": "3",
    "PHONOGLYPH_FAULT_OPERATION": "stem_separation",
    "PHONOGLYPH_FAULT_OPERATION_DELAY_S": "3",  # a job outlasts a few renewals
}


def test_a_write_lock_held_for_a_while_is_waited_out(tmp_path: Path) -> None:
    db_path = tmp_path / "phonoglyph.db"
    db = Database(db_path)
    first = _queue_job(db, tmp_path / "data")
    holder = sqlite3.connect(db_path, isolation_level=None)
    try:
        with otlp_capture_server() as (endpoint, capture):
            with _workers(tmp_path, endpoint, 1, **LOCK_ENV) as (worker,):
                holder.execute("BEGIN IMMEDIATE")  # the claim finds the database locked
                log = tmp_path / "worker0.log"
                assert _wait_until(lambda: "claim a job failed" in log.read_text() and "retry 3" in log.read_text())
                holder.execute("ROLLBACK")
                assert _wait_until(lambda: _status(db, first) == "completed")

                # locked again while a job runs: its lease renewals and its completion wait too
                second = _queue_job(db, tmp_path / "data")
                assert _wait_until(lambda: _status(db, second) == "running")
                holder.execute("BEGIN IMMEDIATE")
                assert _wait_until(lambda: "renew a lease failed" in log.read_text())
                holder.execute("ROLLBACK")
                assert _wait_until(lambda: _status(db, second) == "completed")
                assert worker.poll() is None
                assert _stop([worker]) == [0]
            snapshot = capture.snapshot()
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
    assert _analytics(snapshot, first) == ["stem_separation_completed", "stem_separation_started"]
    assert _analytics(snapshot, second) == ["stem_separation_completed", "stem_separation_started"]
