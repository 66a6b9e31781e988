"""``python -m services.api --port N [--host 127.0.0.1]``: the API under uvicorn, instrumented."""

from __future__ import annotations

import argparse

import uvicorn

from instrumentation import configure, shutdown
from services.api.app import create_app

SERVICE_NAME = "phonoglyph-api"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.api", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    configure(service_name=SERVICE_NAME)
    try:
        uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning", access_log=False)
    finally:
        shutdown()


if __name__ == "__main__":
    main()
