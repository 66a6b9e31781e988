"""Outage benchmark (issue 11): does an app lose analytics while the collector is away?

    .venv/bin/python bench/outage.py                      # kill-20s, kill-60s, sigterm (about 5 minutes)
    .venv/bin/python bench/outage.py --only kill-20s --rate 50
    .venv/bin/python bench/outage.py --spool-off         # the app without its spool, for comparison

Per scenario, fresh processes on loopback: ``phonoglyph-collector serve`` (local event store, its own
data dir) and an app with no setup code of its own under ``opentelemetry-instrument uvicorn``
(phonoglyph distro, default settings; a service name of its own per run, so the default spool
directory holds nothing of an earlier run). The app's two routes emit the analytics: ``POST
/projects`` a ``project_created`` product event (its id in the response), ``POST /renders`` an
operation (``render_started`` and ``render_completed``). A keep-alive load generator paces
``--rate`` requests per second over 4 connections, half of each, for the whole scenario:

  kill-20s / kill-60s  warm-up, a window "before", the collector SIGKILLed and restarted 20 s / 60 s
                       later on the same port and data dir, a window after
  sigterm              the collector stopped with SIGTERM (it drains) and started again at once

Then the load stops, the app is stopped with SIGTERM (it flushes), and the store is read once it
stops changing (bounded). Printed per scenario: analytics emitted (from the app's 200 responses),
delivered (in the store), lost; which of the ``project_created`` ids are missing; failed requests;
p99 before and during the outage; the app's RSS growth (max during the run - after warm-up).
Everything started is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CONNECTIONS = 4
_CONTENT_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)
_PORT = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")

APP = """
from fastapi import FastAPI
from opentelemetry import trace

app = FastAPI()


@app.post("/projects")
async def create_project() -> dict[str, str]:
    from instrumentation import track

    return {"event_id": track("project_created", {"phonoglyph.project.id": "p"})}


@app.post("/renders")
async def render() -> dict[str, str]:
    from instrumentation import operation

    with operation("render", {"phonoglyph.render.id": "r"}):
        span = trace.get_current_span().get_span_context()
    return {"trace_id": format(span.trace_id, "032x")}
"""


@dataclass
class Scenario:
    name: str
    down_s: float
    how: str  # "kill" or "term"


SCENARIOS = {
    "kill-20s": Scenario("kill-20s", 20.0, "kill"),
    "kill-60s": Scenario("kill-60s", 60.0, "kill"),
    "sigterm": Scenario("sigterm", 0.0, "term"),
}


@dataclass
class Load:
    """What the load generator saw: per request (start, latency, ok), and the ids of the events."""

    samples: list[tuple[float, float, bool]] = field(default_factory=list)
    project_ids: set[str] = field(default_factory=set)
    renders: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _get(url: str, timeout_s: float = 1.0) -> int:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status)
    except OSError:
        return 0


def _wait(predicate, timeout_s: float, step_s: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return bool(predicate())


class Collector:
    def __init__(self, port: int, data_dir: Path, log: Path) -> None:
        self.port, self.data_dir, self.log = port, data_dir, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTHOG_", "COLLECTOR_"))}
        env.update({"COLLECTOR_ENDPOINT": f"127.0.0.1:{self.port}", "COLLECTOR_DATA_DIR": str(self.data_dir)})
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "phonoglyph-collector"), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        if not _wait(lambda: _get(f"http://127.0.0.1:{self.port}/readyz") == 200, 30):
            raise RuntimeError(f"the collector did not get ready: {self.log.read_text(errors='replace')[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class App:
    def __init__(self, app_dir: Path, collector_port: int, service_name: str, log: Path, spool: bool) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "PHONOGLYPH_", "SENTRY_")) and k != "PYTHONPATH"
        }
        env.update(
            {
                "OTEL_PYTHON_DISTRO": "phonoglyph",
                "OTEL_PYTHON_CONFIGURATOR": "phonoglyph",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
                "OTEL_SERVICE_NAME": service_name,
                "PYTHONPATH": str(ROOT),
            }
        )
        if not spool:
            env["PHONOGLYPH_SPOOL"] = "off"
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(BIN / "opentelemetry-instrument"), str(BIN / "uvicorn"), "outage_app:app", "--port", "0",
                 "--log-level", "warning"],
                cwd=app_dir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        # uvicorn prints its port at info level only: find it from the listening socket instead
        self.port = 0

        def listening() -> bool:
            self.port = _listening_port(self.process.pid)
            return self.port != 0 or self.process.poll() is not None

        _wait(listening, 30, 0.1)
        if not self.port:
            raise RuntimeError(f"the app did not start: {log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def _listening_port(pid: int) -> int:
    """The TCP port ``pid`` listens on (from /proc/net/tcp and its socket inodes), 0 if none yet."""
    try:
        inodes = {
            os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1]
            for fd in os.listdir(f"/proc/{pid}/fd")
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")
        }
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:  # LISTEN
                return int(parts[1].split(":")[1], 16)
    except OSError:
        pass
    return 0


async def _client(port: int, index: int, interval_s: float, load: Load) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    next_at = time.perf_counter()
    path = "/projects" if index % 2 == 0 else "/renders"
    request = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode()
    try:
        while not load.stop.is_set():
            next_at += interval_s
            started = time.perf_counter()
            ok = False
            try:
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                match = _CONTENT_LENGTH.search(head)
                body = await reader.readexactly(int(match.group(1)) if match else 0)
                ok = head.startswith(b"HTTP/1.1 200")
                if ok and path == "/projects":
                    load.project_ids.add(json.loads(body)["event_id"])
                elif ok:
                    load.renders += 1
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            load.samples.append((time.monotonic(), time.perf_counter() - started, ok))
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    finally:
        writer.close()


def run_load(port: int, rate: float, load: Load) -> threading.Thread:
    interval_s = CONNECTIONS / rate

    async def drive() -> None:
        await asyncio.gather(*(_client(port, index, interval_s, load) for index in range(CONNECTIONS)))

    thread = threading.Thread(target=lambda: asyncio.run(drive()), name="load", daemon=True)
    thread.start()
    return thread


def _p99_ms(samples: list[tuple[float, float, bool]], start: float, end: float) -> float:
    latencies = sorted(latency for at, latency, _ok in samples if start <= at < end)
    if not latencies:
        return float("nan")
    return latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000


def _store(data_dir: Path) -> tuple[dict[str, int], set[str]]:
    path = data_dir / "events.db"
    if not path.exists():
        return {}, set()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        counts = dict(db.execute("SELECT event, COUNT(*) FROM events GROUP BY event").fetchall())
        ids = {row[0] for row in db.execute("SELECT uuid FROM events WHERE event = 'project_created'")}
    return counts, ids


def run(scenario: Scenario, args: argparse.Namespace, work: Path) -> dict[str, object]:
    base = work / scenario.name
    base.mkdir()
    (base / "outage_app.py").write_text(APP)
    service_name = f"outage-bench-{uuid.uuid4().hex[:8]}"
    collector = Collector(_free_port(), base / "collector", base / "collector.log")
    app: App | None = None
    load = Load()
    try:
        collector.start()
        app = App(base, collector.port, service_name, base / "app.log", spool=not args.spool_off)
        pid = app.process.pid
        thread = run_load(app.port, args.rate, load)
        time.sleep(args.warmup_s)
        rss_start = rss_max = _rss_kb(pid)
        before_start = time.monotonic()
        time.sleep(args.window_s)
        outage_start = time.monotonic()
        if scenario.how == "kill":
            collector.stop(signal.SIGKILL)
            end = time.monotonic() + scenario.down_s
            while time.monotonic() < end:
                rss_max = max(rss_max, _rss_kb(pid))
                time.sleep(0.5)
        else:
            collector.stop(signal.SIGTERM)
        collector.start()
        outage_end = time.monotonic()
        end = time.monotonic() + args.window_s
        while time.monotonic() < end:
            rss_max = max(rss_max, _rss_kb(pid))
            time.sleep(0.5)
        load.stop.set()
        thread.join(15)
        rss_max = max(rss_max, _rss_kb(pid))
        app.stop()  # SIGTERM: the app flushes
        emitted = len(load.project_ids) + 2 * load.renders
        history: list[int] = []

        def settled() -> bool:
            counts, _ids = _store(collector.data_dir)
            history.append(
                sum(counts.get(name, 0) for name in ("project_created", "render_started", "render_completed"))
            )
            return history[-1] >= emitted or (len(history) > 30 and history[-1] == history[-30])

        _wait(settled, 90, 0.1)
    finally:
        load.stop.set()
        if app is not None:
            app.stop()
        collector.stop(signal.SIGTERM)
    counts, ids = _store(collector.data_dir)
    delivered = (
        len(ids & load.project_ids)
        + min(counts.get("render_started", 0), load.renders)
        + min(counts.get("render_completed", 0), load.renders)
    )
    during_end = outage_end if scenario.how == "kill" else outage_end + 5
    shutil.rmtree(Path(tempfile.gettempdir()) / "phonoglyph-spool" / service_name, ignore_errors=True)
    return {
        "scenario": scenario.name,
        "requests": len(load.samples),
        "failed": sum(1 for _at, _latency, ok in load.samples if not ok),
        "emitted": emitted,
        "delivered": delivered,
        "lost": emitted - delivered,
        "projects": f"{len(ids & load.project_ids)}/{len(load.project_ids)}",
        "renders": f"{counts.get('render_started', 0)}+{counts.get('render_completed', 0)}/{load.renders}x2",
        "p99_before_ms": _p99_ms(load.samples, before_start, outage_start),
        "p99_during_ms": _p99_ms(load.samples, outage_start, during_end),
        "rss_growth_mb": (rss_max - rss_start) / 1024,
    }


def report(results: list[dict[str, object]], command: str) -> str:
    lines = [
        f"`{command}`",
        "",
        "| scenario | requests | failed | analytics emitted | delivered | lost | project_created"
        " | render started+completed | p99 before | p99 during | app RSS growth |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['scenario']} | {r['requests']:,} | {r['failed']} | {r['emitted']:,} | {r['delivered']:,}"
            f" | {r['lost']} | {r['projects']} | {r['renders']} | {r['p99_before_ms']:.1f} ms"
            f" | {r['p99_during_ms']:.1f} ms | {r['rss_growth_mb']:+.1f} MB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (half of them 2 events)")
    parser.add_argument("--spool-off", action="store_true", help="PHONOGLYPH_SPOOL=off in the app (the old behaviour)")
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--window-s", type=float, default=15.0, help="the windows before and after the outage")
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)

    def stop(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one exit; the finally blocks stop what was started
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    results = []
    with tempfile.TemporaryDirectory(prefix="phonoglyph-outage-") as work:
        for name in names:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            results.append(run(SCENARIOS[name], args, Path(work)))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    command = "python bench/outage.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(report(results, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
