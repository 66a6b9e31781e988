"""A worker killed (SIGKILL) in the middle of a job: the job stays 'running' until its lease runs
out, then the next worker runs it again, in the trace of the request that queued it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from instrumentation import semconv
from services.audio.wav import encode
from services.store import accounts, catalog, jobs
from services.store.database import Database
from tests.fakes.otlp import otlp_capture_server

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[3]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
LEASE_S = 2.0
TIMEOUT_S = 60.0


def _queue_a_long_stem_job(db: Database, data_dir: Path) -> str:
    """A 60 s track (its separation takes a while) and a job queued as a request would queue it."""
    t_s = np.arange(60 * 22050) / 22050
    path = data_dir / "files" / "long.wav"
    path.parent.mkdir(parents=True)
    path.write_bytes(encode(0.3 * np.sin(2 * np.pi * 330 * t_s), 22050))
    with db.transaction() as conn:
        user_id = accounts.create_user(conn, email=None, name=None, guest=True, credits=0)
        project_id = catalog.create_project(conn, user_id=user_id, name="p")
        record = catalog.FileRecord(
            id=catalog.new_file_id(),
            project_id=project_id,
            user_id=user_id,
            filename="long.wav",
            path=str(path),
            size_bytes=path.stat().st_size,
            duration_s=60.0,
            sample_rate_hz=22050,
            channels=1,
        )
        catalog.insert_file(conn, record)
        carrier = {"traceparent": TRACEPARENT, "baggage": f"user.id={user_id},session.id=s_crash"}
        return jobs.enqueue(conn, kind="stem_separation", file_id=record.id, user_id=user_id, carrier=carrier).id


def _wait_for_status(db: Database, job_id: str, status: str) -> jobs.Job:
    deadline_s = time.monotonic() + TIMEOUT_S
    while True:
        job = jobs.get_job(db.read(), job_id)
        if job.status == status or time.monotonic() > deadline_s:
            return job
        time.sleep(0.02)


def test_a_job_interrupted_by_a_crash_is_picked_up_again(tmp_path: Path) -> None:
    db = Database(tmp_path / "phonoglyph.db")
    job_id = _queue_a_long_stem_job(db, tmp_path / "data")
    with otlp_capture_server() as (endpoint, capture):
        env = {
            **os.environ,
            "PHONOGLYPH_DB": str(tmp_path / "phonoglyph.db"),
            "PHONOGLYPH_DATA_DIR": str(tmp_path / "data"),
            "PHONOGLYPH_JOB_LEASE_S": str(LEASE_S),
            "PHONOGLYPH_WORKER_POLL_INTERVAL_S": "0.05",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "SENTRY_DSN": "",
        }
        workers: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(2):
                workers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "services.worker"],
                        cwd=REPO_ROOT,
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                if len(workers) == 1:
                    assert _wait_for_status(db, job_id, "running").status == "running"
                    workers[0].send_signal(signal.SIGKILL)
                    workers[0].wait(10)
                    assert jobs.get_job(db.read(), job_id).status == "running"  # nobody finishes it
            job = _wait_for_status(db, job_id, "completed")
            assert (job.status, job.attempts) == ("completed", 2)
            assert sorted(job.result["stems"]) == ["harmonic", "percussive"]
            workers[1].send_signal(signal.SIGTERM)
            assert workers[1].wait(15) == 0
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait(10)
        spans = [span for span in capture.snapshot()["spans"] if span["attributes"].get(semconv.JOB_ID) == job_id]
    (span,) = spans  # the killed attempt exported nothing; the second one ran in the request's trace
    assert span["trace_id"] == TRACEPARENT.split("-")[1]
    assert span["parent_span_id"] == TRACEPARENT.split("-")[2]
    assert (span["attributes"]["phonoglyph.job.attempt"], span["attributes"][semconv.OUTCOME]) == (2, "completed")
    assert span["attributes"][semconv.SESSION_ID] == "s_crash"
    assert not list((tmp_path / "data" / "stems" / job_id).glob("*.part"))
