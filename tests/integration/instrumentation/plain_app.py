"""A FastAPI app with no instrumentation code: run under opentelemetry-instrument by test_distro.py."""

from __future__ import annotations

import os

from fastapi import FastAPI

app = FastAPI()


@app.get("/items/{item_id}")
async def get_item(item_id: str) -> dict[str, object]:
    return {"id": item_id, "pid": os.getpid()}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/fail")
async def fail() -> None:
    raise RuntimeError("the handler failed")
