"""A FastAPI app with no instrumentation code, stopped by SIGTERM or SIGINT in test_signals.py."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fastapi import FastAPI

app = FastAPI()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/quick/{name}")
async def quick(name: str) -> dict[str, object]:
    return {"name": name, "pid": os.getpid()}


@app.get("/slow/{name}")
async def slow(name: str) -> dict[str, object]:
    """Answers after the test has signalled the server: the request is in flight during the shutdown."""
    Path(os.environ["SHUTDOWN_APP_MARKERS"], name).write_text(str(os.getpid()))
    await asyncio.sleep(1.0)
    return {"name": name, "pid": os.getpid()}
