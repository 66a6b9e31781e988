"""A process stopped by an unexpected error: reported to Sentry before it exits, and it exits non-zero.

The worker: the job store stays locked by another process for longer than its retry budget, so its
claim ends in ``sqlite3.OperationalError: database is locked`` after a few logged retries. The api:
its database file is not a database.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from services.store.database import Database
from tests.fakes.otlp import otlp_capture_server
from tests.fakes.sentry import FakeSentry

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[3]
TIMEOUT_S = 60.0


def test_a_worker_stopped_by_a_locked_job_store_is_reported_and_exits_non_zero(tmp_path: Path) -> None:
    db_path = tmp_path / "phonoglyph.db"
    Database(db_path)  # the schema, as the api would have created it
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock and never lets go
    try:
        with FakeSentry() as sentry, otlp_capture_server() as (endpoint, _capture):
            env = {
                **os.environ,
                "PHONOGLYPH_DB": str(db_path),
                "PHONOGLYPH_DATA_DIR": str(tmp_path / "data"),
                "PHONOGLYPH_DB_BUSY_TIMEOUT_S": "0.05",
                "PHONOGLYPH_STORE_RETRY_BUDGET_S": "0.5",
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "SENTRY_DSN": sentry.dsn,
                "PHONOGLYPH_SENTRY_SPANS": "off",
            }
            worker = subprocess.run(
                [sys.executable, "-m", "services.worker"],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
            )
            assert worker.returncode == 1, worker.stderr
            assert "retry 1" in worker.stderr  # the lock was first taken for a transient one
            assert sentry.wait_for(lambda fake: len(fake.events) >= 1)  # shutdown() flushed it before exiting
            (event,) = sentry.events
            assert sentry.errors == []
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    (exception,) = event["exception"]["values"]
    assert (exception["type"], exception["value"]) == ("OperationalError", "database is locked")
    assert event["level"] == "fatal"
    assert event["logger"] == "services.worker"
    assert "worker stopped by an unexpected error" in event["logentry"]["message"]


def test_an_api_that_cannot_start_is_reported_and_exits_non_zero(tmp_path: Path) -> None:
    db_path = tmp_path / "phonoglyph.db"
    db_path.write_bytes(b"this is not an SQLite database" * 100)
    with FakeSentry() as sentry, otlp_capture_server() as (endpoint, _capture):
        env = {
            **os.environ,
            "PHONOGLYPH_DB": str(db_path),
            "PHONOGLYPH_DATA_DIR": str(tmp_path / "data"),
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "SENTRY_DSN": sentry.dsn,
            "PHONOGLYPH_SENTRY_SPANS": "off",
        }
        api = subprocess.run(
            [sys.executable, "-m", "services.api", "--port", "0"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
        assert api.returncode == 1, api.stderr
        assert sentry.wait_for(lambda fake: len(fake.events) >= 1)
        (event,) = sentry.events
    assert [value["type"] for value in event["exception"]["values"]] == ["DatabaseError"]
    assert (event["level"], event["logger"]) == ("fatal", "services.api")
