"""The local stack: collector, api and worker as processes on loopback (``make demo``, ``make up``).

``python -m services.stack demo`` starts the three processes on free ports with embedded defaults (no
PostHog key: the collector's local event store; Sentry only if ``SENTRY_DSN`` is set), drives the api with
the journeys, waits until every event is delivered, prints a summary and stops everything; it exits 0 only
if every step worked. ``python -m services.stack up`` starts the same processes and keeps them running until
Ctrl-C or SIGTERM, then stops them in order (services first, so that their telemetry is flushed; the
collector last, once its outbox is drained).

Each process logs to ``.stack/logs/<name>.log``; data lives under ``.stack/`` (``STACK_DIR``). A process is
started in its own session and stopped with SIGTERM, then SIGKILL after a grace period; an ``atexit`` hook
and a parent-death signal make sure none outlives the runner.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

STACK_DIR = Path(".stack")
LOOPBACK = "127.0.0.1"
DEMO_USERS = 12
DEMO_SEED = 7
FUNNEL_STEPS = (
    "user_signed_up",
    "file_uploaded",
    "stem_separation_completed",
    "render_completed",
    "credits_purchased",
)
STOP_ORDER = ("api", "worker", "collector")
_PR_SET_PDEATHSIG = 1


class StackError(RuntimeError):
    """A process did not start, did not become ready, or a step of the demo failed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _parent_death_signal():
    """A ``preexec_fn`` that makes the child get SIGTERM when the runner dies, even by SIGKILL (Linux).

    ``prctl`` is looked up here, in the parent: the child, between fork and exec, only calls it (no
    ``dlopen`` there, whose lock another thread may have held at fork time).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class ManagedProcess:
    """One child process in its own session, with its output in a log file."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    popen: subprocess.Popen | None = None
    killed: bool = False

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                list(self.argv),
                env=dict(self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_parent_death_signal(),
            )
        self.killed = False

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal_group(self, signum: int) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signum)

    def stop(self, timeout_s: float) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Returns the exit code (None: never started)."""
        if self.popen is None:
            return None
        if self.running:
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.wait()

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash, as far as the process can tell)."""
        if self.popen is not None:
            self.killed = self.running or self.killed
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclass
class Stack:
    """Collector, api and worker on free loopback ports, with data and logs under ``root``.

    ``environ`` is the base environment of every process (default: this process's, without
    ``POSTHOG_API_KEY``, so that nothing goes to a real PostHog unless asked); ``collector_env`` and
    ``service_env`` add to it (e.g. ``POSTHOG_API_KEY``/``POSTHOG_HOST`` for the collector).
    """

    root: Path = STACK_DIR
    environ: Mapping[str, str] | None = None
    collector_env: Mapping[str, str] = field(default_factory=dict)
    service_env: Mapping[str, str] = field(default_factory=dict)
    python: str = sys.executable
    ready_timeout_s: float = 60.0
    stop_timeout_s: float = 20.0
    collector_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    @property
    def collector_url(self) -> str:
        return f"http://{LOOPBACK}:{self.collector_port}"

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    @property
    def collector_data_dir(self) -> Path:
        return self.root / "collector"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    # -- environment ------------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        env = dict(os.environ if self.environ is None else self.environ)
        env.pop("POSTHOG_API_KEY", None)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def collector_process_env(self) -> dict[str, str]:
        env = self.base_env()
        env.update(
            COLLECTOR_ENDPOINT=f"{LOOPBACK}:{self.collector_port}",
            COLLECTOR_DATA_DIR=str(self.collector_data_dir.resolve()),
        )
        env.update(self.collector_env)
        return env

    def journeys_env(self) -> dict[str, str]:
        """The journeys sign their purchases with the api's billing secret."""
        env = self.base_env()
        env["PHONOGLYPH_BILLING_SECRET"] = self.service_process_env("journeys")["PHONOGLYPH_BILLING_SECRET"]
        return env

    def service_process_env(self, service_name: str) -> dict[str, str]:
        env = self.base_env()
        env.setdefault("PHONOGLYPH_BILLING_SECRET", "local-demo-billing-secret")
        env.setdefault("SENTRY_ENVIRONMENT", "local")
        env.update(
            PHONOGLYPH_DB=str((self.root / "phonoglyph.db").resolve()),
            PHONOGLYPH_DATA_DIR=str((self.root / "data").resolve()),
            OTEL_EXPORTER_OTLP_ENDPOINT=self.collector_url,
            OTEL_SERVICE_NAME=service_name,
            OTEL_TRACES_SAMPLER="parentbased_always_on",
            OTEL_BSP_SCHEDULE_DELAY="500",
            OTEL_BLRP_SCHEDULE_DELAY="500",
        )
        env.update(self.service_env)
        return env

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Collector (wait for /readyz), api (wait for /health), worker. Stops what started on failure."""
        atexit.register(self.shutdown)
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.start_collector()
            self._start(
                "api",
                ["-m", "services.api", "--host", LOOPBACK, "--port", str(self.api_port)],
                self.service_process_env("phonoglyph-api"),
            )
            self.wait_http_ok("api", f"{self.api_url}/health")
            self._start("worker", ["-m", "services.worker"], self.service_process_env("phonoglyph-worker"))
            self.check_running()
        except BaseException:
            self.shutdown()
            raise

    def start_collector(self) -> None:
        self._start("collector", ["-m", "collector", "serve"], self.collector_process_env())
        self.wait_http_ok("collector", f"{self.collector_url}/readyz")

    def _start(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> None:
        process = ManagedProcess(name, [self.python, *args], env, self.logs_dir / f"{name}.log")
        self.processes[name] = process
        process.start()

    def wait_http_ok(self, name: str, url: str) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        process = self.processes[name]
        while time.monotonic() < deadline:
            if not process.running:
                raise StackError(f"{name} exited with {process.popen.returncode}:\n{process.log_tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            time.sleep(0.1)
        raise StackError(f"{name} not ready at {url} in {self.ready_timeout_s:.0f} s:\n{process.log_tail()}")

    def check_running(self) -> None:
        for name, process in self.processes.items():
            if not process.running:
                raise StackError(f"{name} exited with {process.popen.returncode}:\n{process.log_tail()}")

    def kill_collector(self) -> None:
        """SIGKILL the collector (for crash tests); ``start_collector()`` restarts it on the same port."""
        self.processes["collector"].kill()

    def stop_services(self) -> dict[str, int | None]:
        """Stop api and worker (SIGTERM: they flush their telemetry to the collector)."""
        services = [name for name in ("api", "worker") if name in self.processes]
        return {name: self.processes[name].stop(self.stop_timeout_s) for name in services}

    def shutdown(self) -> dict[str, int | None]:
        """Stop every process in ``STOP_ORDER``; safe to call more than once. Returns exit codes."""
        codes = {}
        for name in STOP_ORDER:
            if name in self.processes:
                codes[name] = self.processes[name].stop(self.stop_timeout_s)
        atexit.unregister(self.shutdown)
        return codes

    def clean_exit(self, codes: Mapping[str, int | None]) -> bool:
        """Every process ended by itself on SIGTERM (exit 0 or the default SIGTERM death), none killed."""
        return all(
            code in (0, -signal.SIGTERM) and not self.processes[name].killed
            for name, code in codes.items()
            if code is not None
        )

    # -- the collector, seen from outside --------------------------------------------------

    def collector_metrics(self) -> dict[str, float]:
        try:
            with urllib.request.urlopen(f"{self.collector_url}/metrics", timeout=5) as response:
                return parse_prometheus(response.read().decode())
        except OSError as exc:
            raise StackError(f"collector /metrics: {exc}\n{self.processes['collector'].log_tail()}") from exc

    def wait_until_drained(self, timeout_s: float, quiet_s: float = 1.5, on_wait=None) -> bool:
        """Until the outbox is empty and no new event was queued for ``quiet_s``. False on timeout."""
        deadline = time.monotonic() + timeout_s
        last_queued, quiet_since = None, time.monotonic()
        while time.monotonic() < deadline:
            metrics = self.collector_metrics()
            queued = metrics.get("phonoglyph_collector_queued_events_total", 0.0)
            depth = metrics.get("phonoglyph_collector_outbox_depth", 0.0)
            if queued != last_queued:
                last_queued, quiet_since = queued, time.monotonic()
            if depth == 0 and time.monotonic() - quiet_since >= quiet_s:
                return True
            if on_wait is not None:
                on_wait(depth, queued)
            time.sleep(0.25)
        return False

    def collector_cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.python, "-m", "collector", *args],
            env=self.collector_process_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def stored_events(self) -> list[dict]:
        """The events in the collector's local store (``phonoglyph-collector events --json``)."""
        result = self.collector_cli("events", "--json")
        if result.returncode != 0:
            raise StackError(f"phonoglyph-collector events failed ({result.returncode}): {result.stderr}")
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def parse_prometheus(text: str) -> dict[str, float]:
    """Sample values by name, summed over labels (enough for totals and gauges)."""
    values: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_and_labels, _, value = line.rpartition(" ")
        name = name_and_labels.split("{", 1)[0]
        with contextlib.suppress(ValueError):
            values[name] += float(value)
    return dict(values)


# -- the summary ------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class FunnelStep:
    name: str
    users: int
    conversion: float  # of the first step's users


@dataclass(frozen=True)
class FailedOperation:
    event: str
    error_type: str
    trace_id: str


@dataclass(frozen=True)
class Summary:
    events_per_name: dict[str, int]
    funnel: list[FunnelStep]
    failures: list[FailedOperation]
    durations_ms: dict[str, tuple[int, float, float]]  # operation: (count, p50, p95)


def funnel(events: Iterable[Mapping], steps: Sequence[str]) -> list[FunnelStep]:
    """Distinct ids reaching each step, in order: a step counts at or after the previous one's time."""
    first_seen: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for event in events:
        first_seen[event["event"]][event["distinct_id"]].append(event["timestamp"])
    reached: dict[str, str] = {user: min(times) for user, times in first_seen[steps[0]].items()}
    result = [FunnelStep(steps[0], len(reached), 1.0 if reached else 0.0)]
    start = len(reached)
    for step in steps[1:]:
        following = {}
        for user, since in reached.items():
            later = [time for time in first_seen[step].get(user, []) if time >= since]
            if later:
                following[user] = min(later)
        reached = following
        result.append(FunnelStep(step, len(reached), len(reached) / start if start else 0.0))
    return result


def summarize(events: Sequence[Mapping], funnel_steps: Sequence[str] = FUNNEL_STEPS) -> Summary:
    names = Counter(event["event"] for event in events)
    steps = list(funnel_steps)
    if "render_completed" in steps and not names["render_completed"] and names["render_started"]:
        steps[steps.index("render_completed")] = "render_started"
    failures = [
        FailedOperation(
            event["event"],
            str(event["properties"].get("error_type") or "unknown"),
            str(event["properties"].get("trace_id") or "-"),
        )
        for event in events
        if event["event"].endswith("_failed")
    ]
    durations: dict[str, list[float]] = defaultdict(list)
    for event in events:
        name = event["event"]
        value = event["properties"].get("processing_time_ms")
        if value is not None and (name.endswith("_completed") or name.endswith("_failed")):
            durations[name.rsplit("_", 1)[0]].append(float(value))
    return Summary(
        events_per_name=dict(sorted(names.items())),
        funnel=funnel(events, steps),
        failures=failures,
        durations_ms={
            operation: (len(values), percentile(values, 0.5), percentile(values, 0.95))
            for operation, values in sorted(durations.items())
        },
    )


def render_summary(summary: Summary, stack: Stack, *, max_failures: int = 10) -> str:
    lines = ["", "== Events per name (PostHog events in the collector's local store)"]
    width = max((len(name) for name in summary.events_per_name), default=10)
    lines += [f"  {name:<{width}}  {count:>5}" for name, count in summary.events_per_name.items()]
    lines += ["", "== Funnel (distinct users, in order)"]
    for step in summary.funnel:
        lines.append(f"  {step.name:<27} {step.users:>4}   {step.conversion:6.1%}")
    lines += ["", f"== Failed operations: {len(summary.failures)}"]
    for error_type, count in Counter((f.event, f.error_type) for f in summary.failures).most_common():
        lines.append(f"  {error_type[0]:<27} {error_type[1]:<28} x{count}")
    for failure in summary.failures[:max_failures]:
        lines.append(f"    {failure.event:<25} {failure.error_type:<28} trace {failure.trace_id}")
    lines += ["", "== Processing time per operation (ms)"]
    lines.append(f"  {'operation':<20} {'count':>5} {'p50':>9} {'p95':>9}")
    for operation, (count, p50, p95) in summary.durations_ms.items():
        lines.append(f"  {operation:<20} {count:>5} {p50:>9.1f} {p95:>9.1f}")
    data_dir = stack.collector_data_dir
    lines += [
        "",
        "== Where the data lives",
        f"  events, outbox, dead letters  {data_dir}",
        f"  api/worker database, files   {stack.root / 'phonoglyph.db'}, {stack.root / 'data'}",
        f"  process logs                  {stack.logs_dir}/{{collector,api,worker}}.log",
        "",
        "== Inspect it",
        f"  export COLLECTOR_DATA_DIR={data_dir}",
        "  phonoglyph-collector events [--event NAME] [--json]",
        "  phonoglyph-collector funnel " + " ".join(step.name for step in summary.funnel),
        "  phonoglyph-collector stats",
        "  phonoglyph-collector dead-letters list",
        "  (phonoglyph-collector is in .venv/bin; `make up` keeps the stack running)",
    ]
    return "\n".join(lines)


# -- commands ---------------------------------------------------------------------------------


class _Terminated(Exception):
    """SIGTERM received: unwind like Ctrl-C."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def _say(message: str) -> None:
    print(message, flush=True)


def run_journeys(stack: Stack, users: int, seed: int, timeout_s: float) -> int:
    """Run the journeys against the api, relaying their output with elapsed time. Returns the exit code."""
    started = time.monotonic()
    argv = [stack.python, "-m", "services.journeys", "--base-url", stack.api_url]
    argv += ["--users", str(users), "--seed", str(seed)]
    with subprocess.Popen(
        argv,
        env=stack.journeys_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as journeys:
        timer = threading.Timer(timeout_s, lambda: journeys.kill())
        timer.start()
        try:
            for line in journeys.stdout:
                _say(f"  [{time.monotonic() - started:6.1f} s] {line.rstrip()}")
        finally:
            timer.cancel()
        return journeys.wait()


def demo(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if root.exists():
        shutil.rmtree(root)  # a demo starts from nothing, so the summary counts this run only
    stack = Stack(root=root)
    ok = True
    try:
        _say(f"Starting collector, api and worker (logs in {stack.logs_dir}) ...")
        stack.start()
        sentry = "on" if os.environ.get("SENTRY_DSN") else "off (no SENTRY_DSN)"
        _say(f"  collector {stack.collector_url}   api {stack.api_url}   Sentry: {sentry}")
        _say(f"Running the journeys: {args.users} users, seed {args.seed}")
        code = run_journeys(stack, args.users, args.seed, args.timeout)
        if code != 0:
            _say(f"The journeys failed (exit {code}).")
            ok = False
        stack.check_running()
        _say("Waiting for the worker's jobs and the collector's outbox ...")
        progress = _Progress()
        ok &= stack.wait_until_drained(args.timeout, on_wait=progress.update)
        progress.done()
        _say("Stopping api and worker (they flush their telemetry) ...")
        ok &= stack.clean_exit(stack.stop_services())
        drained = stack.wait_until_drained(args.timeout, on_wait=progress.update)
        progress.done()
        if not drained:
            _say("The collector's outbox did not drain in time.")
            ok = False
        events = stack.stored_events()
        summary = summarize(events)
        _say(render_summary(summary, stack))
        if not events or not summary.events_per_name.get("user_signed_up"):
            _say("No user_signed_up event arrived: the pipeline did not work end to end.")
            ok = False
    except StackError as exc:
        _say(f"stack: {exc}")
        ok = False
    except (KeyboardInterrupt, _Terminated):
        _say("\nInterrupted.")
        ok = False
    finally:
        codes = stack.shutdown()
        if not stack.clean_exit(codes):
            _say(f"A process did not stop cleanly: {codes}")
            ok = False
    _say("\nDemo finished: every step worked." if ok else "\nDemo failed: see the messages above and the logs.")
    return 0 if ok else 1


class _Progress:
    """While waiting for delivery: one self-rewriting line on a terminal, a line every few seconds elsewhere."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.tty = sys.stdout.isatty()
        self.every_s = every_s
        self.last_line_at = 0.0
        self.open_line = False

    def update(self, depth: float, queued: float) -> None:
        text = f"  outbox depth {depth:>5.0f}   events queued so far {queued:>6.0f}"
        if self.tty:
            sys.stdout.write(f"\r{text}")
            sys.stdout.flush()
            self.open_line = True
        elif time.monotonic() - self.last_line_at >= self.every_s:
            _say(text)
            self.last_line_at = time.monotonic()

    def done(self) -> None:
        if self.open_line:
            sys.stdout.write("\n")
            self.open_line = False


def up(args: argparse.Namespace) -> int:
    stack = Stack(root=Path(args.root))
    ok = True
    try:
        stack.start()
        _say(
            "\n".join(
                [
                    "Phonoglyph is running:",
                    f"  api        {stack.api_url}  (docs {stack.api_url}/docs, health {stack.api_url}/health)",
                    f"  collector  {stack.collector_url}  (OTLP/HTTP; {stack.collector_url}/metrics, /readyz)",
                    f"  logs       {stack.logs_dir}",
                    f"  events     COLLECTOR_DATA_DIR={stack.collector_data_dir} phonoglyph-collector events -f",
                    "Ctrl-C (or SIGTERM) stops everything and flushes.",
                ]
            )
        )
        while True:
            time.sleep(0.5)
            stack.check_running()
    except (KeyboardInterrupt, _Terminated):
        _say("\nStopping: api and worker first, then the collector once its outbox is drained ...")
    except StackError as exc:
        _say(f"stack: {exc}")
        ok = False
    finally:
        with contextlib.suppress(KeyboardInterrupt, _Terminated):
            if stack.processes.get("collector") and stack.processes["collector"].running:
                ok &= stack.clean_exit(stack.stop_services())
                ok &= stack.wait_until_drained(args.timeout)
            ok &= stack.clean_exit(stack.shutdown())
    _say("Stopped." if ok else "Stopped, but not cleanly: see the logs.")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.stack", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(STACK_DIR), help="data and logs directory (default .stack)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds allowed for each waiting step")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="start, run the journeys, summarize, stop")
    demo_parser.add_argument("--users", type=int, default=DEMO_USERS)
    demo_parser.add_argument("--seed", type=int, default=DEMO_SEED)
    demo_parser.set_defaults(run=demo)
    commands.add_parser("up", help="start and keep running until Ctrl-C").set_defaults(run=up)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_terminated)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
