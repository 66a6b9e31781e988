"""``python -m services.api --port N [--host 127.0.0.1]``: the API under uvicorn, instrumented.

An error that stops the process (e.g. an unusable database at start) is logged at CRITICAL with the
exception, which Sentry's logging integration reports, before ``shutdown()`` closes Sentry; the
process then exits 1 (left to ``sys.excepthook``, it would arrive after Sentry is closed).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import uvicorn

from instrumentation import configure, shutdown
from services.api.app import create_app

SERVICE_NAME = "phonoglyph-api"
EXIT_FATAL = 1

logger = logging.getLogger("services.api")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.api", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    configure(service_name=SERVICE_NAME)
    # uvicorn stops gracefully on SIGTERM, then re-raises the signal: exit normally then, so that
    # shutdown() below flushes the telemetry still queued instead of dying with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(
            create_app(),
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
            # each request in a fresh contextvars.Context: on asyncio, a request whose body made uvicorn
            # pause reading leaks its context (its span, its user's baggage) into later requests
            # (CPython #140947, uvicorn #2167)
            reset_contextvars=True,
        )
    except Exception as exc:
        logger.critical("api stopped by an unexpected error (%s): exiting", type(exc).__name__, exc_info=exc)
        return EXIT_FATAL
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
