"""``python -m services.worker``: the audio worker process (same PHONOGLYPH_DB / PHONOGLYPH_DATA_DIR as the api)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from instrumentation import configure, shutdown
from services.settings import ServiceSettings
from services.store.database import Database
from services.worker.runner import JobWorker

SERVICE_NAME = "phonoglyph-worker"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.worker", description=__doc__)
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure(service_name=SERVICE_NAME)
    settings = ServiceSettings.from_env()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    worker = JobWorker(Database(settings.db_path), settings)
    logging.getLogger("services.worker").info("worker started on %s", settings.db_path)
    try:
        worker.run(stop)
    finally:
        shutdown()


if __name__ == "__main__":
    main()
