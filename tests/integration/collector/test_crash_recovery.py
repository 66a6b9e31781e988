"""kill -9 the collector during ingest and delivery: every accepted event still reaches PostHog.

The collector runs the way a user starts it (``python -m collector serve``) against the strict fake
PostHog; a separate process sends tagged spans with the official OTLP/HTTP exporter (protobuf, gzip)
and reports each batch the collector accepted (answered 200). The test kills the collector with
SIGKILL several times, during ingest and while deliveries are in flight, restarts it each time,
and checks that PostHog received one uuid per accepted span, with duplicates only as identical
copies of the same uuid.

Run as a module (``python -m tests.integration.collector.test_crash_recovery ENDPOINT SPANS BATCH``)
this file is the sender.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
import requests

from collector.delivery.outbox import Outbox
from tests.fakes.posthog import FakePostHog

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
SPANS = 3_000
BATCH = 50
SEND_PAUSE_S = 0.02  # the sender's pace, so that ingest spans several kills
DEADLINE_S = 90


# -- the sender (a separate process) ---------------------------------------------------------


def send(endpoint: str, total: int, batch_size: int) -> int:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "crash-test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("crash-test")
    for n in range(total):
        attributes = {"phonoglyph.operation": "render", "user.id": f"user-{n % 40}", "phonoglyph.render.id": f"r{n}"}
        with tracer.start_as_current_span("render", attributes=attributes):
            pass
    spans = memory.get_finished_spans()
    exporter = OTLPSpanExporter(endpoint=f"http://{endpoint}/v1/traces", timeout=2, compression=Compression.Gzip)
    deadline = time.monotonic() + DEADLINE_S
    for start in range(0, len(spans), batch_size):
        chunk = spans[start : start + batch_size]
        failures = 0
        while exporter.export(chunk) is not SpanExportResult.SUCCESS:  # not accepted: send it again
            failures += 1
            if time.monotonic() > deadline:
                print(json.dumps({"gave_up": start}), flush=True)
                return 1
        ids = [f"{s.context.trace_id:032x}:{s.context.span_id:016x}" for s in chunk]
        print(json.dumps({"accepted": ids, "failures": failures}), flush=True)
        time.sleep(SEND_PAUSE_S)
    exporter.shutdown()
    return 0


# -- the test -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Collector:
    """``python -m collector serve`` as a subprocess that can be killed and restarted."""

    def __init__(self, port: int, env: dict[str, str], log_dir: Path) -> None:
        self.port = port
        self.env = env
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_dir / f"collector-{self.starts}.log", "wb")  # noqa: SIM115 (kept for the child)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "collector", "serve"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        wait_until(self._healthy, 30, "the collector to answer /healthz")

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"collector exited with {self.process.returncode}: {self.log_tail()}")
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def log_tail(self) -> str:
        return (self.log_dir / f"collector-{self.starts}.log").read_text(errors="replace")[-3000:]


def test_kill_9_during_ingest_and_delivery_loses_no_accepted_event(tmp_path):
    posthog = FakePostHog(api_keys=("phc_crash",), latency_s=0.05).start()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "POSTHOG_", "COLLECTOR_"))},
        "POSTHOG_API_KEY": "phc_crash",
        "POSTHOG_HOST": posthog.host,
        "COLLECTOR_ENDPOINT": f"127.0.0.1:{port}",
        "COLLECTOR_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(ROOT),
    }
    collector = Collector(port, env, tmp_path)
    sender = None
    accepted: list[dict] = []
    try:
        collector.start()
        sender = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.collector.test_crash_recovery",
                f"127.0.0.1:{port}",
                str(SPANS),
                str(BATCH),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=open(tmp_path / "sender.log", "wb"),  # noqa: SIM115 (the child owns it)
            text=True,
        )
        reader = threading.Thread(
            target=lambda: accepted.extend(json.loads(line) for line in sender.stdout), daemon=True
        )
        reader.start()
        batches = SPANS // BATCH

        # during ingest, at three points, the second while a delivery is in flight as well
        for kill_after, during_delivery in ((batches // 6, False), (batches // 3, True), (batches // 2, False)):
            wait_until(lambda kill_after=kill_after: len(accepted) >= kill_after, 60, f"{kill_after} accepted batches")
            if during_delivery:
                wait_until(lambda: posthog.in_flight() > 0, 30, "a delivery in flight")
            assert sender.poll() is None  # ingest is still going on
            collector.kill()
            collector.start()

        # during delivery only: PostHog holds its answers while the rest is ingested, then the
        # collector dies with a batch in flight that PostHog goes on to store (a lost ack)
        posthog.hold()
        assert sender.wait(timeout=DEADLINE_S) == 0, (tmp_path / "sender.log").read_text()[-3000:]
        reader.join(timeout=10)
        wait_until(lambda: posthog.in_flight() > 0, 30, "a delivery in flight")
        collector.kill()
        posthog.release()
        collector.start()

        sent = {span for batch in accepted if "accepted" in batch for span in batch["accepted"]}
        assert len(sent) == SPANS  # the sender resent each batch until it was accepted

        def delivered() -> set[str]:
            return {f"{e['properties']['trace_id']}:{e['properties']['span_id']}" for e in posthog.events}

        wait_until(lambda: delivered() >= sent, 60, "every accepted event at PostHog")
        assert collector.stop() == 0
    finally:
        if sender is not None and sender.poll() is None:
            sender.kill()
            sender.wait()
        if collector.process is not None and collector.process.poll() is None:
            collector.process.kill()
            collector.process.wait()
        posthog.release()
        posthog.stop()

    events = posthog.events
    assert delivered() == sent
    assert len({e["uuid"] for e in events}) == len(sent)  # one uuid per accepted span
    copies = defaultdict(list)
    for e in events:
        copies[e["uuid"]].append(e)
    assert all(copy == same[0] for same in copies.values() for copy in same)  # duplicates are identical
    assert {e["event"] for e in events} == {"render_completed"}

    outbox = Outbox(Path(env["COLLECTOR_DATA_DIR"]) / "outbox.db")
    try:
        assert outbox.depth() == 0 and outbox.dead_letters() == []
    finally:
        outbox.close()
    print(
        f"crash test: {len(sent)} accepted spans, {len(events)} PostHog events received "
        f"({len(events) - len(sent)} identical duplicates), {collector.starts} collector starts, "
        f"{sum(batch['failures'] for batch in accepted)} OTLP exports refused or failed and sent again"
    )


if __name__ == "__main__":
    sys.exit(send(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
