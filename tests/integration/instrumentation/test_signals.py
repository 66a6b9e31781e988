"""SIGTERM / SIGINT end a server under opentelemetry-instrument: the last requests' spans still arrive.

uvicorn (one process, ``--workers 2``) and gunicorn's ``UvicornWorker`` end their processes by raising the
signal again after a graceful shutdown (``atexit`` never runs). The span schedule delay is far longer
than the test, so a span that arrives was flushed on the way out.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.fakes.otlp import OtlpCapture
from tests.fakes.sentry import FakeSentry
from tests.integration.instrumentation.test_distro import _PORT, APP_DIR, BIN

pytestmark = pytest.mark.integration

UVICORN = [str(BIN / "uvicorn"), "shutdown_app:app", "--host", "127.0.0.1", "--port", "0"]
GUNICORN = [
    str(BIN / "gunicorn"),
    "shutdown_app:app",
    "-k",
    "uvicorn.workers.UvicornWorker",
    "--workers",
    "2",
    "--bind",
    "127.0.0.1:0",
    "--graceful-timeout",
    "10",
]
SERVERS = {
    "uvicorn": UVICORN,
    "uvicorn --workers 2": [*UVICORN, "--workers", "2"],
    "gunicorn UvicornWorker -w 2": GUNICORN,
}


def _start(command: list[str], env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(BIN / "opentelemetry-instrument"), *command],
            cwd=APP_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    port = None
    while port is None and time.monotonic() < deadline and process.poll() is None:
        match = _PORT.search(log_path.read_bytes())
        port = match.group(1).decode() if match else None
        if port is None:
            time.sleep(0.05)
    assert port is not None, log_path.read_text(errors="replace")
    base_url = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base_url}/healthz", timeout=1)
            return process, base_url
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(log_path.read_text(errors="replace"))


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


@pytest.mark.parametrize("server", list(SERVERS))
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_last_requests_before_a_signal_reach_the_collector_and_sentry(
    server: str, signum: int, otlp: tuple[str, OtlpCapture], tmp_path: Path
) -> None:
    if signum == signal.SIGINT and server != "uvicorn":
        pytest.skip("SIGINT: one server is enough (the same handler path as SIGTERM)")
    endpoint, capture = otlp
    markers = tmp_path / "markers"
    markers.mkdir()
    with FakeSentry() as sentry:
        env = {
            **os.environ,
            "OTEL_PYTHON_DISTRO": "phonoglyph",
            "OTEL_PYTHON_CONFIGURATOR": "phonoglyph",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_SERVICE_NAME": "shutdown-app",
            "OTEL_BSP_SCHEDULE_DELAY": "600000",  # nothing leaves on the schedule during the test
            "OTEL_BLRP_SCHEDULE_DELAY": "600000",
            "PHONOGLYPH_INSTRUMENTATION_STRICT": "1",
            "SENTRY_DSN": sentry.dsn,
            "SHUTDOWN_APP_MARKERS": str(markers),
        }
        process, base_url = _start(SERVERS[server], env, tmp_path / "server.log")
        try:
            assert httpx.get(f"{base_url}/quick/before", timeout=5).status_code == 200
            in_flight: list[int] = []
            client = threading.Thread(
                target=lambda: in_flight.append(httpx.get(f"{base_url}/slow/during", timeout=15).status_code)
            )
            client.start()
            deadline = time.monotonic() + 10
            while not (markers / "during").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert (markers / "during").exists()
            os.kill(process.pid, signum)  # the server's main process only, as a process manager does
            client.join(15)
            returncode = process.wait(30)
        finally:
            _stop_group(process)
        log = (tmp_path / "server.log").read_text(errors="replace")
        assert in_flight == [200], log
        if server == "uvicorn":  # as without the distro: SIGTERM kills, SIGINT ends in KeyboardInterrupt (exit 0)
            assert returncode == (-signum if signum == signal.SIGTERM else 0), log
        wanted = {"/quick/before", "/slow/during"}
        assert capture.wait_for(lambda c: wanted <= {s["attributes"].get("url.path") for s in c.spans}, timeout_s=10), (
            capture.snapshot()["spans"],
            log,
        )
        assert sentry.wait_for(
            lambda s: {"GET /quick/{name}", "GET /slow/{name}"} <= {span["name"] for span in s.spans}, timeout_s=10
        ), (sentry.spans, log)
        assert sentry.errors == []
        assert "Traceback" not in log, log
    assert capture.snapshot()["errors"] == []
