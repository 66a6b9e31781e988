"""The job loop: claim, resume the request's trace context, run inside ``operation(kind)``, record.

Each job runs inside ``operation(job.kind, ...)`` under the context extracted from the job's W3C
carrier, so its span is a child of the request that enqueued it and carries the user's identity
from the baggage. A job whose worker died stays 'running' until its lease expires, then another
claim picks it up again; one claimed ``job_max_attempts`` times fails with ``attempts_exhausted``.

While it works, the worker renews its lease every third of ``job_lease_s`` from a heartbeat thread,
so a long job is never claimed by a second worker while its first one is alive, and a killed
worker's job is free again within one lease, or at the next claim of a worker on the same host
(which sees the claiming process is gone). Renewal and completion are fenced by the attempt
(``jobs.renew``, ``jobs.complete``): an attempt that lost its job (stalled past its lease, claimed
again) stops at the next check, writes nothing and logs a warning (no ERROR: the job has not failed).

Analytics once per job: ``<kind>_started`` only on a job's first attempt; the outcome
(``<kind>_completed`` / ``<kind>_failed``) only from the attempt that wrote it to the job store, so
one per job; a retry shows as ``phonoglyph.job.attempt`` on the operation's span. An attempt that lost
its job while alive (stalled for two thirds of a lease with another worker waiting) leaves its
operation with ``OperationAbandoned``: no outcome from it, the attempt that owns the job reports one.

Every failed job is one failed operation (``<kind>_failed``, ``error.type`` = the job's error code)
and one ERROR log line with the exception, which Sentry's logging integration turns into an event
carrying the operation's context (trace, user, job and audio attributes). A job-store write that
finds the database locked or busy is retried with bounded backoff, and so is every read the loop
makes; past the budget the error leaves the loop (``python -m services.worker`` reports it and
exits non-zero).
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from opentelemetry import context, propagate

from instrumentation import OperationAbandoned, operation, semconv
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
RENEWALS_PER_LEASE = 3


class _Lease:
    """Renews one attempt's lease every ``lease_s / RENEWALS_PER_LEASE`` on its own thread (and its own
    database connection) until stopped. ``lost`` is set when a renewal finds the job taken. A renewal
    that cannot be written (the store locked past its retries) proves nothing: the next one tries
    again, and the fenced completion has the last word."""

    def __init__(self, worker: JobWorker, job: jobs.Job) -> None:
        self._worker = worker
        self._job = job
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job.id}", daemon=True)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        if self.lost.is_set():
            raise OperationAbandoned(f"attempt {self._job.attempts} lost its lease")

    def _run(self) -> None:
        lease_s = self._worker.settings.job_lease_s
        interval_s = lease_s / RENEWALS_PER_LEASE
        try:
            while not self._stop.wait(interval_s):
                try:
                    held = self._worker.write(
                        "renew a lease",
                        lambda conn: jobs.renew(conn, self._job.id, attempt=self._job.attempts, lease_s=lease_s),
                        budget_s=interval_s,
                    )
                except sqlite3.Error as exc:
                    logger.warning("job %s: lease renewal failed (%s); trying again", self._job.id, exc)
                    continue
                if not held:
                    self.lost.set()
                    return
        finally:
            self._worker.db.close()  # this thread's connection


class JobWorker:
    def __init__(self, db: Database, settings: ServiceSettings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.db = db
        self.settings = settings
        self.sleep = sleep
        """Waits between store retries and for the operation-delay fault switch."""
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        """Recorded on the jobs this worker claims: another worker on this host reclaims them once it is gone."""
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
                worker=self.identity,
            )

        job = self.write("claim a job", claim)
        for failed in exhausted:
            self._in_job_context(failed, self._report_exhausted)
        if job is None:
            return bool(exhausted)
        self._in_job_context(job, self._process)
        return True

    def write(self, what: str, transaction: Callable[[sqlite3.Connection], T], *, budget_s: float | None = None) -> T:
        """``transaction(conn)`` in a write transaction, tried again (bounded backoff, a log line each
        time) while the database is locked or busy, for at most ``store_retry_budget_s``."""
        return self._retried(what, transaction, write=True, budget_s=budget_s)

    def read(self, what: str, query: Callable[[sqlite3.Connection], T]) -> T:
        """``query(conn)`` on the read connection, retried like ``write``."""
        return self._retried(what, query, write=False)

    def _retried(
        self, what: str, call: Callable[[sqlite3.Connection], T], *, write: bool, budget_s: float | None = None
    ) -> T:
        budget_s = self.settings.store_retry_budget_s if budget_s is None else budget_s
        deadline_s = time.monotonic() + budget_s
        delay_s, retries = RETRY_FIRST_DELAY_S, 0
        while True:
            try:
                if not write:
                    return call(self.db.read())
                with self.db.transaction() as conn:
                    return call(conn)
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
            return self.read("read a job's file", lambda conn: catalog.get_file(conn, job.file_id))
        except NotFoundError:
            return None

    def _process(self, job: jobs.Job) -> None:
        record = self._file_of(job)
        handler = HANDLERS[job.kind]
        faults = self.settings.faults
        # one <kind>_started per job: a retry is an attempt of the job already started, not a new start;
        # a render's start is the api's render_started product event (credits spent): never one here
        started_event = job.kind != "render" and job.attempts == 1
        try:
            with (
                _Lease(self, job) as lease,
                operation(job.kind, self._attributes(job, record), started_event=started_event) as span,
            ):
                if record is None:
                    raise JobFailed(FILE_NOT_FOUND, f"file {job.file_id} is gone")
                if faults.operation == job.kind and faults.operation_delay_s:
                    self.sleep(faults.operation_delay_s)  # fault switch PHONOGLYPH_FAULT_OPERATION_DELAY_S
                lease.check()
                result = handler(job, record, span, self.settings, self.db.read())
                lease.check()

                def complete(conn: sqlite3.Connection) -> bool:  # short: the DSP ran outside the write lock
                    if not jobs.complete(conn, job.id, result, attempt=job.attempts):
                        return False
                    if job.kind == "audio_analysis":
                        jobs.cache_analysis(conn, record.id, result)
                    return True

                if not self.write("complete a job", complete):
                    raise OperationAbandoned(f"attempt {job.attempts} lost its lease before completing")
        except OperationAbandoned as exc:  # no outcome from this attempt: the one that owns the job reports it
            logger.warning("job %s (%s): %s; another attempt owns it, this one stops", job.id, job.kind, exc)
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
        if self.write(
            "fail a job", lambda conn: jobs.fail(conn, job.id, code=code, message=message, attempt=job.attempts)
        ):
            self._log_failure(job, code, message, exc)
        else:
            logger.warning(
                "job %s (%s) failed (%s) after another attempt took it: not recorded", job.id, job.kind, code
            )

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
