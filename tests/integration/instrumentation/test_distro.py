"""An app without instrumentation code, run as `opentelemetry-instrument uvicorn|gunicorn`, subprocesses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.fakes.otlp import OtlpCapture
from tests.fakes.sentry import FakeSentry

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
APP_DIR = Path(__file__).parent
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
REQUESTS = 12
_PORT = re.compile(rb"(?:Uvicorn running on|Listening at:) http://127\.0\.0\.1:(\d+)")


@contextmanager
def served(
    command: list[str], otlp_endpoint: str, log_path: Path, extra_env: dict[str, str] | None = None
) -> Iterator[str]:
    """Start ``command`` under opentelemetry-instrument; yield its base URL; stop it (SIGTERM, then kill)."""
    env = {
        **os.environ,
        "OTEL_PYTHON_DISTRO": "phonoglyph",
        "OTEL_PYTHON_CONFIGURATOR": "phonoglyph",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
        "OTEL_SERVICE_NAME": "plain-app",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        "PHONOGLYPH_INSTRUMENTATION_STRICT": "1",
    }
    env.pop("SENTRY_DSN", None)
    env.update(extra_env or {})
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(BIN / "opentelemetry-instrument"), *command],
            cwd=APP_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        port = None
        while port is None and time.monotonic() < deadline and process.poll() is None:
            match = _PORT.search(log_path.read_bytes())
            port = match.group(1).decode() if match else None
            if port is None:
                time.sleep(0.05)
        assert port is not None, log_path.read_text(errors="replace")
        base_url = f"http://127.0.0.1:{port}"
        _wait_until_serving(base_url, deadline)
        yield base_url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def _wait_until_serving(base_url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base_url}/healthz", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"{base_url} never answered")


def _exercise(base_url: str) -> set[int]:
    pids = set()
    for index in range(REQUESTS):
        with httpx.Client(base_url=base_url, timeout=5) as client:  # a new connection each: any worker
            pids.add(client.get(f"/items/{index}").json()["pid"])
    assert httpx.get(f"{base_url}/fail", timeout=5).status_code == 500  # uvicorn then closes the connection
    httpx.get(f"{base_url}/items/traced", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"}, timeout=5)
    return pids


def _assert_one_server_span_per_request(capture: OtlpCapture) -> None:
    # spans must arrive while the server still runs: exported by the (forked or spawned) workers'
    # own export threads, not only by a flush at exit
    assert capture.wait_for(lambda c: len(c.spans) >= REQUESTS + 2, timeout_s=20), capture.snapshot()["spans"]
    data = capture.snapshot()
    assert data["errors"] == []
    spans = data["spans"]
    assert all(span["kind"] == "SERVER" for span in spans), [s["name"] for s in spans]
    items = [span for span in spans if span["name"] == "GET /items/{item_id}"]
    assert sorted(span["attributes"]["url.path"] for span in items) == sorted(
        [f"/items/{i}" for i in range(REQUESTS)] + ["/items/traced"]
    )
    traced = next(span for span in items if span["attributes"]["url.path"] == "/items/traced")
    assert (traced["trace_id"], traced["parent_span_id"]) == (TRACE_ID, PARENT_SPAN_ID)
    [failed] = [span for span in spans if span["name"] == "GET /fail"]
    assert failed["status"] == "ERROR"
    assert not any(span["attributes"].get("url.path") == "/healthz" for span in spans)
    assert {span["resource"]["service.name"] for span in spans} == {"plain-app"}


@pytest.mark.parametrize("workers", [1, 2])
def test_uvicorn_under_opentelemetry_instrument(workers: int, otlp: tuple[str, OtlpCapture], tmp_path: Path) -> None:
    endpoint, capture = otlp
    command = [str(BIN / "uvicorn"), "plain_app:app", "--host", "127.0.0.1", "--port", "0"]
    if workers > 1:
        command += ["--workers", str(workers)]
    with served(command, endpoint, tmp_path / "server.log") as base_url:
        _exercise(base_url)
        _assert_one_server_span_per_request(capture)


def test_gunicorn_with_uvicorn_workers_after_fork(otlp: tuple[str, OtlpCapture], tmp_path: Path) -> None:
    endpoint, capture = otlp
    command = [
        str(BIN / "gunicorn"),
        "plain_app:app",
        "-k",
        "uvicorn.workers.UvicornWorker",
        "--workers",
        "2",
        "--bind",
        "127.0.0.1:0",
    ]
    with served(command, endpoint, tmp_path / "server.log") as base_url:
        _exercise(base_url)
        _assert_one_server_span_per_request(capture)


def test_the_same_pipeline_with_sentry_and_scrubbing_under_opentelemetry_instrument(
    otlp: tuple[str, OtlpCapture], tmp_path: Path
) -> None:
    endpoint, capture = otlp
    secret = "tok_SEED_4b1d"
    command = [str(BIN / "uvicorn"), "plain_app:app", "--host", "127.0.0.1", "--port", "0"]
    with FakeSentry() as sentry:
        with served(command, endpoint, tmp_path / "server.log", {"SENTRY_DSN": sentry.dsn}) as base_url:
            assert httpx.get(f"{base_url}/fail", timeout=5).status_code == 500
            assert httpx.get(f"{base_url}/items/1?access_token={secret}", timeout=5).status_code == 200
            assert capture.wait_for(lambda c: len(c.spans) >= 2, timeout_s=20)
            assert sentry.wait_for(lambda s: bool(s.events) and len(s.spans) >= 2, timeout_s=20)
        spans = {span["name"]: span for span in capture.snapshot()["spans"]}
        [event] = sentry.events
        assert event["exception"]["values"][-1]["type"] == "RuntimeError"
        assert event["contexts"]["trace"]["trace_id"] == spans["GET /fail"]["trace_id"]
        assert {span["name"] for span in sentry.spans} >= {"GET /fail", "GET /items/{item_id}"}
        assert secret.encode() not in sentry.received_bytes()
        assert sentry.errors == []
    assert secret not in repr(capture.snapshot())
    assert spans["GET /items/{item_id}"]["attributes"]["url.query"].startswith("access_token=")
