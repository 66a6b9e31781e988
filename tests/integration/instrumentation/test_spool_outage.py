"""Event records survive a collector that refuses connections, then answers 503, then accepts: each
one reaches it (by ``phonoglyph.event.id``; a repeat is one event), through the on-disk spool. A
process killed with records spooled leaves them to the next process, which sends them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from instrumentation import configure, operation, semconv, shutdown, track
from instrumentation._internal.setup import INSTALLED, force_flush
from instrumentation.testing import pipeline_stats
from tests.fakes.otlp import OtlpCapture, _Handler, _Server, otlp_capture_server

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _ServerOnPort(_Server):
    def __init__(self, capture: OtlpCapture, port: int) -> None:
        super(_Server, self).__init__(("127.0.0.1", port), _Handler)
        self.capture = capture


@contextmanager
def _capture_on(port: int) -> Iterator[OtlpCapture]:
    capture = OtlpCapture()
    server = _ServerOnPort(capture, port)
    thread = threading.Thread(target=server.serve_forever, name="otlp-capture", daemon=True)
    thread.start()
    try:
        yield capture
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _event_ids(capture: OtlpCapture) -> list[str]:
    return [str(record["attributes"].get(semconv.EVENT_ID)) for record in capture.log_records if record["event_name"]]


def _flush_until(capture: OtlpCapture, expected: set[str], attempts: int = 100) -> bool:
    for _ in range(attempts):  # the spool is retried after a back-off of a few seconds at most
        force_flush()
        if capture.wait_for(lambda c: expected <= set(_event_ids(c)), timeout_s=0.2):
            return True
    return False


def test_every_event_record_reaches_the_collector_after_refusals_and_503s(
    fresh_otel: None, monkeypatch: pytest.MonkeyPatch, own_spool_dir: str
) -> None:
    monkeypatch.setenv("OTEL_BSP_EXPORT_TIMEOUT", "300")  # spans may be lost: no long retries for them
    port = _free_port()
    configure(service_name="spool-it", otlp_endpoint=f"http://127.0.0.1:{port}")
    emitted = set()
    for batch in range(3):  # nobody listens: connection refused
        for index in range(10):
            with operation("render"):
                emitted.add(track("project_created", {semconv.PROJECT_ID: f"p_{batch}_{index}"}))
        force_flush()
    assert pipeline_stats()["event_records_spooled"] == 90  # 30 events, 30 render_started, 30 outcomes
    with _capture_on(port) as capture:
        capture.answer_unavailable(times=3)
        for index in range(10):
            emitted.add(track("project_created", {semconv.PROJECT_ID: f"q_{index}"}))
        assert _flush_until(capture, emitted)
        shutdown()
        received = _event_ids(capture)
    assert set(received) >= emitted
    started = {r["span_id"] for r in capture.log_records if r["event_name"] == "render_started"}
    assert len(started) == 30
    # the operation spans could not be exported: their outcomes came as event records, same ids
    completed = [r for r in capture.log_records if r["event_name"] == "render_completed"]
    assert {r["span_id"] for r in completed} == started
    assert all(r["attributes"][semconv.DURATION_MS] >= 0 for r in completed)
    stats = pipeline_stats()
    assert not {
        name: count
        for name, count in stats.items()
        if name.startswith("event_records_") and name.endswith(("_lost", "_dropped"))
    }
    assert stats["event_records_spool_sent"] == stats["event_records_spooled"]
    assert os.listdir(own_spool_dir) == []  # sent: the process's spool directory is gone


def test_a_healthy_collector_never_touches_the_disk(
    otlp: tuple[str, OtlpCapture], fresh_otel: None, own_spool_dir: str
) -> None:
    endpoint, capture = otlp
    configure(service_name="spool-it", otlp_endpoint=endpoint)
    for _ in range(20):
        track("project_created")
    force_flush()
    [installed] = INSTALLED
    assert installed.event_processor._exporter.spool.directory is None  # type: ignore[attr-defined]
    shutdown()
    assert len(_event_ids(capture)) == 20
    assert os.listdir(own_spool_dir) == []


KILLED = r"""
import os, signal
from instrumentation import configure, track
from instrumentation._internal.setup import force_flush
configure(service_name="spool-it")
ids = [track("project_created") for _ in range(25)]
force_flush()
print(" ".join(ids), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_records_spooled_by_a_killed_process_are_sent_by_the_next_one(
    fresh_otel: None, monkeypatch: pytest.MonkeyPatch, own_spool_dir: str
) -> None:
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{_free_port()}"}
    env["OTEL_BSP_EXPORT_TIMEOUT"] = "300"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    emitted = set(killed.stdout.split())
    assert len(emitted) == 25
    with otlp_capture_server() as (endpoint, capture):
        configure(service_name="spool-it", otlp_endpoint=endpoint)
        assert _flush_until(capture, emitted)
        shutdown()
    assert pipeline_stats()["event_records_spool_adopted"] == 25
    assert os.listdir(own_spool_dir) == []
