"""``python -m services.worker``: the audio worker process (same PHONOGLYPH_DB / PHONOGLYPH_DATA_DIR as the api).

An unexpected error that stops the worker is logged at CRITICAL with the exception (Sentry's logging
integration reports it) before ``shutdown()`` flushes and closes Sentry, and the process exits 1:
left to ``sys.excepthook``, it would arrive after Sentry is closed and never be reported.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from instrumentation import configure, shutdown
from services.settings import ServiceSettings
from services.store.database import Database
from services.worker.runner import JobWorker

SERVICE_NAME = "phonoglyph-worker"
EXIT_FATAL = 1

logger = logging.getLogger("services.worker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.worker", description=__doc__)
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure(service_name=SERVICE_NAME)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    worker: JobWorker | None = None
    try:
        settings = ServiceSettings.from_env()
        worker = JobWorker(Database(settings.db_path, busy_timeout_s=settings.db_busy_timeout_s), settings)
        logger.info("worker started on %s", settings.db_path)
        if settings.faults.any_on:
            logger.warning("fault switches on (README, Fault switches): %s", settings.faults)
        worker.run(stop)
    except Exception as exc:
        job = worker.current_job if worker is not None else None
        logger.critical(
            "worker stopped by an unexpected error (%s): exiting",
            type(exc).__name__,
            exc_info=exc,
            extra={"phonoglyph.job.id": job.id, "phonoglyph.job.kind": job.kind} if job else {},
        )
        return EXIT_FATAL
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
