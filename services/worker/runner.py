"""The job loop: claim, resume the request's trace context, run inside ``operation(kind)``, record.

Each job runs inside ``operation(job.kind, ...)`` under the context extracted from the job's W3C
carrier, so its span is a child of the request that enqueued it and carries the user's identity
from the baggage. A job whose worker died stays 'running' until its lease expires, then another
claim picks it up again.
"""

from __future__ import annotations

import logging
import threading

from opentelemetry import context, propagate

from instrumentation import operation, semconv
from services.audio.wav import AudioError
from services.settings import ServiceSettings
from services.store import catalog, jobs
from services.store.database import Database, NotFoundError
from services.worker.handlers import HANDLERS

logger = logging.getLogger("services.worker")


class JobWorker:
    def __init__(self, db: Database, settings: ServiceSettings) -> None:
        self.db = db
        self.settings = settings

    def run(self, stop: threading.Event) -> None:
        """Process jobs until ``stop`` is set; wait ``worker_poll_interval_s`` when the queue is empty."""
        while not stop.is_set():
            if not self.run_once():
                stop.wait(self.settings.worker_poll_interval_s)

    def run_once(self) -> bool:
        """Claim and process one job; False when there was none."""
        with self.db.transaction() as conn:
            job = jobs.claim(conn, lease_s=self.settings.job_lease_s, max_attempts=self.settings.job_max_attempts)
        if job is None:
            return False
        token = context.attach(propagate.extract(job.carrier))
        try:
            self._process(job)
        finally:
            context.detach(token)
        return True

    def _process(self, job: jobs.Job) -> None:
        try:
            record = catalog.get_file(self.db.read(), job.file_id)
        except NotFoundError:
            with self.db.transaction() as conn:
                jobs.fail(conn, job.id, code="file_not_found", message=f"file {job.file_id} is gone")
            return
        attributes = {
            semconv.JOB_ID: job.id,
            semconv.FILE_ID: record.id,
            semconv.PROJECT_ID: record.project_id,
            semconv.FILE_SIZE: record.size_bytes,
            semconv.AUDIO_DURATION_S: record.duration_s,
            semconv.AUDIO_SAMPLE_RATE_HZ: record.sample_rate_hz,
            semconv.AUDIO_CHANNELS: record.channels,
            "phonoglyph.job.attempt": job.attempts,
        }
        if job.kind == "render":
            attributes[semconv.RENDER_ID] = job.id
        handler = HANDLERS[job.kind]
        try:
            # a render's start is the api's render_started product event (credits spent): no second one here
            with operation(job.kind, attributes, started_event=job.kind != "render") as span:
                result = handler(job, record, span, self.settings, self.db.read())
                with self.db.transaction() as conn:  # short: the DSP ran outside the write lock
                    if job.kind == "audio_analysis":
                        jobs.cache_analysis(conn, record.id, result)
                    jobs.complete(conn, job.id, result)
        except AudioError as exc:
            logger.warning("job %s (%s) failed: %s: %s", job.id, job.kind, exc.code, exc.message)
            self._fail(job, exc.code, exc.message)
        except Exception as exc:  # a processing error: reported (to Sentry through logging), job failed
            logger.exception("job %s (%s) failed with an unexpected error", job.id, job.kind)
            self._fail(job, "processing_error", f"{type(exc).__name__}: {exc}")

    def _fail(self, job: jobs.Job, code: str, message: str) -> None:
        with self.db.transaction() as conn:
            jobs.fail(conn, job.id, code=code, message=message)
