"""The job loop: claim, resume the request's trace context, run inside ``operation(kind)``, record.

Each job runs inside ``operation(job.kind, ...)`` under the context extracted from the job's W3C
carrier, so its span is a child of the request that enqueued it and carries the user's identity
from the baggage. A job whose worker died stays 'running' until its lease expires, then another
claim picks it up again; one claimed ``job_max_attempts`` times fails with ``attempts_exhausted``.

Every failed job is one failed operation (``<kind>_failed``, ``error.type`` = the job's error code)
and one ERROR log line with the exception, which Sentry's logging integration turns into an event
carrying the operation's context (trace, user, job and audio attributes). A job-store write that
finds the database locked or busy is retried with bounded backoff; past the budget the error
leaves the loop (``python -m services.worker`` reports it and exits non-zero).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from opentelemetry import context, propagate

from instrumentation import operation, semconv
from services.audio.wav import AudioError
from services.settings import ServiceSettings
from services.store import catalog, jobs
from services.store.catalog import FileRecord
from services.store.database import Database, NotFoundError
from services.worker.errors import (
    ATTEMPTS_EXHAUSTED,
    FILE_NOT_FOUND,
    PROCESSING_ERROR,
    JobFailed,
    is_transient_store_error,
)
from services.worker.handlers import HANDLERS

logger = logging.getLogger("services.worker")

T = TypeVar("T")

RETRY_FIRST_DELAY_S = 0.05
RETRY_MAX_DELAY_S = 2.0


class JobWorker:
    def __init__(self, db: Database, settings: ServiceSettings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.db = db
        self.settings = settings
        self.sleep = sleep
        """Waits between store retries and for the operation-delay fault switch."""
        self.current_job: jobs.Job | None = None
        """The job being processed, for the report of an error that stops the worker."""

    def run(self, stop: threading.Event) -> None:
        """Process jobs until ``stop`` is set; wait ``worker_poll_interval_s`` when the queue is empty."""
        while not stop.is_set():
            if not self.run_once():
                stop.wait(self.settings.worker_poll_interval_s)

    def run_once(self) -> bool:
        """Claim and process one job (and report the jobs that ran out of attempts); False when there was none."""
        exhausted: list[jobs.Job] = []

        def claim(conn: sqlite3.Connection) -> jobs.Job | None:
            exhausted.clear()  # a retried transaction starts over
            return jobs.claim(
                conn,
                lease_s=self.settings.job_lease_s,
                max_attempts=self.settings.job_max_attempts,
                exhausted=exhausted,
            )

        job = self.write("claim a job", claim)
        for failed in exhausted:
            self._in_job_context(failed, self._report_exhausted)
        if job is None:
            return bool(exhausted)
        self._in_job_context(job, self._process)
        return True

    def write(self, what: str, transaction: Callable[[sqlite3.Connection], T]) -> T:
        """``transaction(conn)`` in a write transaction, tried again (bounded backoff, a log line each
        time) while the database is locked or busy, for at most ``store_retry_budget_s``."""
        deadline_s = time.monotonic() + self.settings.store_retry_budget_s
        delay_s, retries = RETRY_FIRST_DELAY_S, 0
        while True:
            try:
                with self.db.transaction() as conn:
                    return transaction(conn)
            except sqlite3.OperationalError as exc:
                if not is_transient_store_error(exc) or time.monotonic() + delay_s > deadline_s:
                    raise
                retries += 1
                logger.warning("job store: %s failed (%s); retry %d in %.2f s", what, exc, retries, delay_s)
                self.sleep(delay_s)
                delay_s = min(delay_s * 2, RETRY_MAX_DELAY_S)

    def _in_job_context(self, job: jobs.Job, process: Callable[[jobs.Job], None]) -> None:
        token = context.attach(propagate.extract(job.carrier))
        self.current_job = job
        try:
            process(job)
            self.current_job = None  # an error that leaves ``process`` keeps it, for its report
        finally:
            context.detach(token)

    def _attributes(self, job: jobs.Job, record: FileRecord | None) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            semconv.JOB_ID: job.id,
            semconv.FILE_ID: job.file_id,
            "phonoglyph.job.attempt": job.attempts,
        }
        if record is not None:
            attributes.update(
                {
                    semconv.PROJECT_ID: record.project_id,
                    semconv.FILE_SIZE: record.size_bytes,
                    semconv.AUDIO_DURATION_S: record.duration_s,
                    semconv.AUDIO_SAMPLE_RATE_HZ: record.sample_rate_hz,
                    semconv.AUDIO_CHANNELS: record.channels,
                }
            )
        if job.kind == "render":
            attributes[semconv.RENDER_ID] = job.id
        return attributes

    def _file_of(self, job: jobs.Job) -> FileRecord | None:
        try:
            return catalog.get_file(self.db.read(), job.file_id)
        except NotFoundError:
            return None

    def _process(self, job: jobs.Job) -> None:
        record = self._file_of(job)
        handler = HANDLERS[job.kind]
        faults = self.settings.faults
        try:
            # a render's start is the api's render_started product event (credits spent): no second one here
            with operation(job.kind, self._attributes(job, record), started_event=job.kind != "render") as span:
                if record is None:
                    raise JobFailed(FILE_NOT_FOUND, f"file {job.file_id} is gone")
                if faults.operation == job.kind and faults.operation_delay_s:
                    self.sleep(faults.operation_delay_s)  # fault switch PHONOGLYPH_FAULT_OPERATION_DELAY_S
                result = handler(job, record, span, self.settings, self.db.read())

                def complete(conn: sqlite3.Connection) -> None:  # short: the DSP ran outside the write lock
                    if job.kind == "audio_analysis":
                        jobs.cache_analysis(conn, record.id, result)
                    jobs.complete(conn, job.id, result)

                self.write("complete a job", complete)
        except (AudioError, JobFailed) as exc:
            self._fail(job, exc.code, exc.message, exc)
        except Exception as exc:  # a processing error: reported, job failed
            self._fail(job, PROCESSING_ERROR, f"{type(exc).__name__}: {exc}", exc)

    def _report_exhausted(self, job: jobs.Job) -> None:
        """A job failed at claim time for its attempts: its failed operation and its report, once."""
        message = (
            f"gave up after {job.attempts} attempts: none of them finished "
            "(the worker died or stalled past its lease each time)"
        )
        try:
            with operation(job.kind, self._attributes(job, self._file_of(job)), started_event=False):
                raise JobFailed(ATTEMPTS_EXHAUSTED, message)
        except JobFailed as exc:
            self._log_failure(job, ATTEMPTS_EXHAUSTED, message, exc)

    def _fail(self, job: jobs.Job, code: str, message: str, exc: BaseException) -> None:
        self._log_failure(job, code, message, exc)
        self.write("fail a job", lambda conn: jobs.fail(conn, job.id, code=code, message=message))

    @staticmethod
    def _log_failure(job: jobs.Job, code: str, message: str, exc: BaseException) -> None:
        # ERROR with the exception: Sentry's logging integration reports it, with what the exception
        # carries from the operation it left (trace, user, job and audio attributes)
        logger.error(
            "job %s (%s) failed: %s: %s",
            job.id,
            job.kind,
            code,
            message,
            exc_info=exc,
            extra={"phonoglyph.job.id": job.id, "phonoglyph.job.kind": job.kind, "phonoglyph.job.error_code": code},
        )
