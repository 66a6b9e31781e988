"""Fixtures for the services' integration tests: settings in a temp dir, the app served by a real
uvicorn on 127.0.0.1:<free port> in a thread with the pipeline captured in memory, and WAV bodies."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI

from instrumentation.testing import Captured, capture
from services.api import create_app
from services.audio.wav import encode
from services.settings import ServiceSettings
from services.store.database import Database
from services.worker import JobWorker
from tests.fakes.sentry import FakeSentry

BILLING_SECRET = "test-billing-secret-0123"
SAMPLE_RATE_HZ = 22050


@pytest.fixture
def settings(tmp_path: Path) -> ServiceSettings:
    return ServiceSettings(
        db_path=tmp_path / "db" / "phonoglyph.db",
        data_dir=tmp_path / "data",
        billing_secret=BILLING_SECRET,
        max_upload_bytes=400_000,
        max_duration_s=5.0,
    )


def wav_body(duration_s: float = 2.0, *, sample_rate_hz: int = SAMPLE_RATE_HZ, bits_per_sample: int = 16) -> bytes:
    t_s = np.arange(int(duration_s * sample_rate_hz)) / sample_rate_hz
    samples = 0.3 * np.sin(2 * np.pi * 440 * t_s)
    for beat_s in np.arange(0.0, duration_s, 0.5):
        start = int(beat_s * sample_rate_hz)
        samples[start : start + 64] += 0.5 * np.exp(-np.arange(64) / 12.0)[: samples.size - start]
    return encode(samples, sample_rate_hz, bits_per_sample=bits_per_sample)


@contextmanager
def serve(app: FastAPI, startup_timeout_s: float = 10.0) -> Iterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1:<free port> in a thread; yield its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", reset_contextvars=True)
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline_s = time.monotonic() + startup_timeout_s
        while not server.started:
            if time.monotonic() > deadline_s or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def api_client(app: FastAPI) -> Iterator[httpx.Client]:
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=10.0) as client:
        yield client


@dataclass
class Api:
    client: httpx.Client
    captured: Captured
    settings: ServiceSettings
    db: Database

    def guest(self) -> dict[str, str]:
        answer = self.client.post("/auth/guest")
        assert answer.status_code == 201
        return {"X-Guest-Session": answer.json()["guest_token"]}

    def member(self, email: str = "ada@example.test") -> tuple[dict[str, str], dict[str, Any]]:
        answer = self.client.post("/auth/signup", json={"email": email})
        assert answer.status_code == 201, answer.text
        return {"Authorization": f"Bearer {answer.json()['token']}"}, answer.json()

    def project(self, headers: dict[str, str]) -> str:
        answer = self.client.post("/projects", json={"name": "demo"}, headers=headers)
        assert answer.status_code == 201
        return answer.json()["project_id"]

    def upload(self, headers: dict[str, str], project_id: str, body: bytes | None = None) -> httpx.Response:
        return self.client.post(
            f"/projects/{project_id}/files?filename=a.wav",
            content=wav_body() if body is None else body,
            headers={**headers, "Content-Type": "audio/wav"},
        )

    def run_worker(self) -> int:
        worker, done = JobWorker(self.db, self.settings), 0
        while worker.run_once():
            done += 1
        return done

    def spans(self, **attributes: Any) -> list[dict[str, Any]]:
        return [
            span
            for span in self.captured.spans()
            if all(span["attributes"].get(key) == value for key, value in attributes.items())
        ]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [event for event in self.captured.events() if event["event_name"] == name]


@pytest.fixture
def api(settings: ServiceSettings) -> Iterator[Api]:
    with capture(service_name="phonoglyph-api") as captured:
        app = create_app(settings)
        with api_client(app) as client:
            yield Api(client, captured, settings, app.state.db)


@pytest.fixture
def sentry_api(settings: ServiceSettings) -> Iterator[tuple[Api, FakeSentry]]:
    """``api`` with Sentry on, sending to a recording fake Sentry."""
    with FakeSentry() as sentry, capture(service_name="phonoglyph-api", sentry_dsn=sentry.dsn) as captured:
        app = create_app(settings)
        with api_client(app) as client:
            yield Api(client, captured, settings, app.state.db), sentry
