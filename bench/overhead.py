"""How much does our instrumentation cost a FastAPI service? Side by side, in one run.

    .venv/bin/python bench/overhead.py                 # 3 rounds x 3 s windows (about a minute)
    .venv/bin/python bench/overhead.py --rounds 5 --window-s 4
    .venv/bin/python bench/overhead.py --http h11      # uvicorn's pure-Python stack instead

Four uvicorn servers (one process each, the same app code, which has no instrumentation code) run at
the same time, on the stack users run: uvicorn with httptools and uvloop (what ``uvicorn[standard]``
installs), unless ``--http h11`` (h11 and asyncio's own loop), with uvicorn's defaults otherwise (an
access line per request, written to a log file per server):
  bare           no OpenTelemetry at all
  stock          SDK TracerProvider + BatchSpanProcessor + OTLP/HTTP exporter, FastAPIInstrumentor defaults
  ours           the app under ``opentelemetry-instrument`` with our distro (OTLP export to a local sink,
                 Sentry on, errors and spans, with a DSN pointing at the same sink)
  ours-nosentry  the same without SENTRY_DSN (shows what Sentry costs)
A sink process answers every OTLP and Sentry request with 200 and counts them. wrk (Debian's ``wrk``;
without it, a keep-alive asyncio load generator) drives, in interleaved rounds, each server's
  trivial    GET /trivial: a small JSON response (16 keep-alive connections)
  realistic  GET /realistic: about 5 ms of numpy work plus a SQLite query (2 connections)
Every server runs with the same fixed glibc allocation policy (``FIXED_MALLOC``). The script prints,
per configuration, throughput relative to bare, p50/p99 latency relative to
bare, and server CPU microseconds per request (utime+stime from /proc/<pid>/stat).

    .venv/bin/python bench/overhead.py --breakdown

Where the time goes: each layer alone, in a fresh process, calling the ASGI app directly (no
server, no sockets), CPU microseconds per GET /trivial including the export threads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ("bare", "stock", "ours", "ours-nosentry")
ENDPOINTS = {"trivial": ("/trivial", 16), "realistic": ("/realistic", 2)}  # path, concurrent connections
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(64 << 20)}
"""glibc's allocation policy, the same for every server (unless set in the environment). Left dynamic,
it depends on each process's allocation history and threads: the realistic endpoint's 1 MB numpy arrays
were mapped and unmapped on every FFT in some servers (about 3,500 page faults and 4 ms of system CPU a
request) and came from the heap in others, which made a server with our Sentry setup look 40% cheaper
than bare."""
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_CONTENT_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


# -- the server side (run as: overhead.py serve CONFIG PORT SINK_PORT) --------------------------


def build_app(fft_repeats: int) -> Any:
    import sqlite3

    import numpy as np
    from fastapi import FastAPI

    app = FastAPI()
    database = sqlite3.connect(":memory:", check_same_thread=False)
    database.execute("CREATE TABLE renders (id INTEGER PRIMARY KEY, project TEXT, seconds REAL)")
    database.executemany(
        "INSERT INTO renders (project, seconds) VALUES (?, ?)", [(f"p_{i % 50}", i * 0.1) for i in range(5000)]
    )
    database_lock = threading.Lock()
    signal = _signal()

    @app.get("/trivial")
    async def trivial() -> dict[str, Any]:
        return {"status": "ok", "items": [1, 2, 3]}

    @app.get("/realistic")
    def realistic() -> dict[str, Any]:
        energy = 0.0
        for _ in range(fft_repeats):
            energy += float(np.abs(np.fft.rfft(signal)).sum())
        with database_lock:
            (count, total) = database.execute(
                "SELECT COUNT(*), SUM(seconds) FROM renders WHERE project = ?", ("p_7",)
            ).fetchone()
        return {"energy": energy, "renders": count, "seconds": total}

    return app


def _signal() -> Any:
    import numpy as np

    return np.random.default_rng(7).standard_normal(1 << 16)


def calibrate_fft_repeats(target_s: float = 0.005) -> int:
    """How many FFTs make ``target_s`` of work here; measured once, used by every server."""
    import numpy as np

    signal = _signal()
    started = time.perf_counter()
    for _ in range(20):
        np.abs(np.fft.rfft(signal)).sum()
    per_call_s = (time.perf_counter() - started) / 20
    return max(1, round(target_s / per_call_s))


def serve(config: str, port: int, sink_port: int, fft_repeats: int, http: str) -> None:
    import uvicorn

    app = build_app(fft_repeats)
    if config == "stock":
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": "bench-stock"}))
        endpoint = f"http://127.0.0.1:{sink_port}/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        trace.set_tracer_provider(provider)
        FastAPIInstrumentor.instrument_app(app)
    loop = "uvloop" if http == "httptools" else "asyncio"
    uvicorn.run(app, host="127.0.0.1", port=port, http=http, loop=loop)  # uvicorn's defaults: access log on


BEFORE = "-before"
"""Suffix of a configuration served from ``--before``'s tree (the code before a change), in the same run."""


def _ours(config: str) -> bool:
    return config.removesuffix(BEFORE) in ("ours", "ours-nosentry")


def server_command(
    config: str, port: int, sink_port: int, fft_repeats: int, http: str, before: Path | None = None
) -> list[str]:
    """``ours`` runs under ``opentelemetry-instrument``, as an app with no instrumentation code would."""
    name = config.removesuffix(BEFORE)  # the same server code; only the instrumentation comes from --before
    command = [sys.executable, __file__, "serve", name, str(port), str(sink_port), str(fft_repeats), http]
    if _ours(config):
        return [str(Path(sys.executable).with_name("opentelemetry-instrument")), *command]
    return command


def server_environment(
    config: str,
    sink_port: int,
    environment: dict[str, str],
    before: Path | None = None,
    extra: Sequence[str] = (),
) -> dict[str, str]:
    """The environment of a server; ``extra`` (``NAME=VALUE`` items) only for ours."""
    if before is not None and config.endswith(BEFORE):
        environment = {**environment, "PYTHONPATH": str(before)}
    if not _ours(config):
        return environment
    environment = {
        **environment,
        "OTEL_PYTHON_DISTRO": "phonoglyph",
        "OTEL_PYTHON_CONFIGURATOR": "phonoglyph",
        "OTEL_SERVICE_NAME": f"bench-{config}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
        **dict(item.split("=", 1) for item in extra),
    }
    if config.removesuffix(BEFORE) == "ours":
        environment["SENTRY_DSN"] = f"http://public@127.0.0.1:{sink_port}/1"
    return environment


# -- the breakdown (run as: overhead.py layer NAME SINK_PORT) -----------------------------------

LAYERS = {
    "bare": "FastAPI, nothing else",
    "server-span": "instrument_fastapi + SDK TracerProvider without processors (request thread only)",
    "ours-nosentry": "configure() without Sentry + instrument_fastapi (span, identity, scrub, encode, export)",
    "sentry-default": "sentry_sdk.init(dsn) alone, default integrations (Starlette/FastAPI auto-enabled)",
    "sentry-no-starlette": "sentry_sdk.init(dsn) alone, Starlette/FastAPI integrations disabled",
    "ours": "configure() with Sentry (as shipped) + instrument_fastapi",
}


def run_layer(layer: str, sink_port: int, requests: int = 4000) -> None:
    app = build_app(1)
    sink = f"http://127.0.0.1:{sink_port}"
    dsn = f"http://public@127.0.0.1:{sink_port}/1"
    if layer == "server-span":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        sys.path.insert(0, str(ROOT))
        from instrumentation import instrument_fastapi
        from instrumentation._internal import pipeline

        trace.set_tracer_provider(TracerProvider())
        pipeline.CURRENT[0] = pipeline.Pipeline()
        instrument_fastapi(app)
    elif layer in ("ours", "ours-nosentry"):
        sys.path.insert(0, str(ROOT))
        from instrumentation import configure, instrument_fastapi

        configure(service_name="bench-layer", otlp_endpoint=sink, sentry_dsn=dsn if layer == "ours" else None)
        instrument_fastapi(app)
    elif layer.startswith("sentry-"):
        import sentry_sdk
        from sentry_sdk.integrations.fastapi import FastApiIntegration
        from sentry_sdk.integrations.starlette import StarletteIntegration

        disabled = [StarletteIntegration(), FastApiIntegration()] if layer == "sentry-no-starlette" else []
        sentry_sdk.init(dsn=dsn, disabled_integrations=disabled)
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": "/trivial", "raw_path": b"/trivial", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000")], "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def drive(count: int) -> None:
        for _ in range(count):
            await app(dict(scope), receive, send)

    asyncio.run(drive(300))
    started = time.process_time()
    asyncio.run(drive(requests))
    print(f"{(time.process_time() - started) / requests * 1e6:.0f}")


def breakdown() -> None:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("SENTRY_DSN", "OTEL_EXPORTER_OTLP_ENDPOINT", "PHONOGLYPH_INSTRUMENTATION_STRICT"):
        environment.pop(name, None)
    sink_port = _free_port()
    sink = subprocess.Popen([sys.executable, __file__, "sink", str(sink_port)], env=environment)
    try:
        _wait_for_port(sink_port)
        results: dict[str, list[float]] = {layer: [] for layer in LAYERS}
        for _ in range(3):
            for layer in LAYERS:
                output = subprocess.run(
                    [sys.executable, __file__, "layer", layer, str(sink_port)],
                    env=environment, capture_output=True, text=True, check=True,
                )  # fmt: skip
                results[layer].append(float(output.stdout.strip().splitlines()[-1]))
        bare = min(results["bare"])
        print("CPU us per GET /trivial, in process (best of 3); + over bare")
        for layer, description in LAYERS.items():
            best = min(results[layer])
            print(f"{layer:<20} {best:>6.0f} {best - bare:>+6.0f}  {description}")
    finally:
        sink.terminate()
        sink.wait(10)


# -- the sink (run as: overhead.py sink PORT) ------------------------------------------------------


def run_sink(port: int) -> None:
    counts: dict[str, int] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                counts[self.path] = counts.get(self.path, 0) + 1
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            with lock:
                body = json.dumps(counts).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


# -- the load generator ---------------------------------------------------------------------


@dataclass
class Window:
    requests: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    wrk_elapsed_s: float = 0.0
    percentiles: dict[str, list[float]] = field(default_factory=dict)
    """wrk's p50 and p99 of this window (wrk reports percentiles, not every latency)."""


async def _client(port: int, path: str, deadline: float, window: Window) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    latencies = window.latencies_s
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            match = _CONTENT_LENGTH.search(head)
            await reader.readexactly(int(match.group(1)) if match else 0)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200"):
                window.errors += 1
    finally:
        writer.close()


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S  # utime, stime


def measure(pid: int, port: int, path: str, connections: int, window_s: float, load: str) -> Window:
    window = Window()
    cpu_before = _cpu_s(pid)
    started = time.perf_counter()
    if load == "wrk":
        _run_wrk(port, path, connections, window_s, window)
    else:

        async def drive() -> None:
            deadline = time.perf_counter() + window_s
            await asyncio.gather(*(_client(port, path, deadline, window) for _ in range(connections)))

        asyncio.run(drive())
        window.requests = len(window.latencies_s)
    window.elapsed_s = time.perf_counter() - started
    window.cpu_s = _cpu_s(pid) - cpu_before
    return window


_WRK_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_WRK_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_WRK_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
_WRK_BAD = re.compile(
    r"Non-2xx or 3xx responses: (\d+)|Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)


def _run_wrk(port: int, path: str, connections: int, window_s: float, window: Window) -> None:
    """One wrk run (one thread: the server has the other core); its p50/p99 stand in for the latencies."""
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(window_s))}s", "--latency", f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True, timeout=window_s + 30,
    ).stdout  # fmt: skip
    total = _WRK_TOTAL.search(output)
    if total is None:
        raise RuntimeError(f"wrk printed no total:\n{output}")
    window.requests = int(total.group(1))
    window.wrk_elapsed_s = float(total.group(2)) * _WRK_UNITS[total.group(3)]
    for percentile, value, unit in _WRK_PERCENTILE.findall(output):
        window.percentiles.setdefault(percentile, []).append(float(value) * _WRK_UNITS[unit])
    for match in _WRK_BAD.finditer(output):
        window.errors += sum(int(group) for group in match.groups() if group)


# -- orchestration --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-s", type=float, default=3.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE",
        help="an environment variable for the servers of ours (e.g. OTEL_TRACES_SAMPLER=always_off); repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--before", type=Path,
        help="a tree of the code before a change (git archive REV | tar -x -C DIR): adds ours-before and "
        "ours-nosentry-before, served from it, to the same run",
    )  # fmt: skip
    parser.add_argument("--http", choices=("httptools", "h11"), default="httptools", help="uvicorn's HTTP stack")
    parser.add_argument(
        "--load", choices=("wrk", "python"), default="wrk" if shutil.which("wrk") else "python",
        help="the load generator (default: wrk when installed)",
    )  # fmt: skip
    parser.add_argument("--breakdown", action="store_true", help="where the time goes, layer by layer")
    args = parser.parse_args()
    if args.breakdown:
        breakdown()
        return
    configs = args.configs.split(",")
    if args.before is not None:
        configs += [f"{config}{BEFORE}" for config in configs if _ours(config) and not config.endswith(BEFORE)]

    environment = {
        **FIXED_MALLOC,  # unless the environment sets them
        **os.environ,
        "PYTHONPATH": str(ROOT),
    }
    for name in ("SENTRY_DSN", "OTEL_EXPORTER_OTLP_ENDPOINT", "PHONOGLYPH_INSTRUMENTATION_STRICT"):
        environment.pop(name, None)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        sink_port = _free_port()
        processes.append(subprocess.Popen([sys.executable, __file__, "sink", str(sink_port)], env=environment))
        _wait_for_port(sink_port)
        fft_repeats = calibrate_fft_repeats()
        print(f"realistic endpoint: {fft_repeats} FFTs of 65536 samples (about 5 ms here) + a SQLite query")
        servers: dict[str, tuple[int, int]] = {}
        logs = Path(tempfile.mkdtemp(prefix="overhead-"))
        print(f"server logs (access lines included): {logs}")
        for config in configs:
            port = _free_port()
            with open(logs / f"{config}.log", "wb") as log:
                process = subprocess.Popen(
                    server_command(config, port, sink_port, fft_repeats, args.http, args.before),
                    env=server_environment(config, sink_port, environment, args.before, args.server_env),
                    # opentelemetry-instrument puts the working directory first on PYTHONPATH
                    cwd=args.before if args.before is not None and config.endswith(BEFORE) else ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            processes.append(process)
            _wait_for_port(port)
            servers[config] = (process.pid, port)

        for pid, port in servers.values():
            for path, connections in ENDPOINTS.values():
                measure(pid, port, path, connections, args.warmup_s, args.load)

        results: dict[tuple[str, str], list[Window]] = {(c, e): [] for c in configs for e in ENDPOINTS}
        for round_index in range(args.rounds):
            order = configs[round_index % len(configs) :] + configs[: round_index % len(configs)]
            for endpoint, (path, connections) in ENDPOINTS.items():
                for config in order:
                    pid, port = servers[config]
                    results[(config, endpoint)].append(measure(pid, port, path, connections, args.window_s, args.load))
        _report(configs, results, sink_port, args)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def _report(
    configs: list[str], results: dict[tuple[str, str], list[Window]], sink_port: int, args: argparse.Namespace
) -> None:
    import urllib.request

    loop = "uvloop" if args.http == "httptools" else "asyncio"
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; uvicorn http={args.http} loop={loop}; "
        f"load: {args.load}; windows per cell: {len(next(iter(results.values())))}"
    )
    for endpoint, (path, connections) in ENDPOINTS.items():
        print(f"\n{endpoint} (GET {path}, {connections} keep-alive connections)")
        print(
            f"{'config':<20} {'req/s':>8} {'ratio':>6} {'p50 ms':>8} {'p50 x':>6} {'p99 ms':>8} {'p99 x':>6} "
            f"{'CPU us/req':>10} {'errors':>6}"
        )
        base: dict[str, float] = {}
        for config in configs:
            windows = results[(config, endpoint)]
            requests = sum(w.requests for w in windows)
            throughput = requests / sum(w.wrk_elapsed_s or w.elapsed_s for w in windows)
            if windows[0].percentiles:  # wrk: the median of the windows' percentiles
                p50 = _percentile([v for w in windows for v in w.percentiles.get("50", [])], 0.5)
                p99 = _percentile([v for w in windows for v in w.percentiles.get("99", [])], 0.5)
            else:
                latencies = [value for w in windows for value in w.latencies_s]
                p50, p99 = _percentile(latencies, 0.50), _percentile(latencies, 0.99)
            cpu_us = sum(w.cpu_s for w in windows) / requests * 1e6
            if config == configs[0]:
                base = {"throughput": throughput, "p50": p50, "p99": p99}
            print(
                f"{config:<20} {throughput:>8.0f} {throughput / base['throughput']:>6.2f} {p50 * 1e3:>8.2f} "
                f"{p50 / base['p50']:>6.2f} {p99 * 1e3:>8.2f} {p99 / base['p99']:>6.2f} {cpu_us:>10.0f} "
                f"{sum(w.errors for w in windows):>6}"
            )
    with urllib.request.urlopen(f"http://127.0.0.1:{sink_port}/") as response:
        print(f"\nsink received (requests by path): {json.loads(response.read())}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    elif len(sys.argv) > 1 and sys.argv[1] == "layer":
        run_layer(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "sink":
        run_sink(int(sys.argv[2]))
    else:
        main()
