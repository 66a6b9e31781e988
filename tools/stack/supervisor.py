"""The stack's processes: collector, api and worker on free loopback ports, started, watched and stopped.

Each process logs to ``<root>/logs/<name>.log``; data lives under ``<root>`` (``STACK_DIR`` by default). A
process is started in its own session and stopped with SIGTERM, then SIGKILL after a grace period; an
``atexit`` hook and a parent-death signal make sure none outlives the runner. The collector is watched from
outside, through its ``/metrics`` and its CLI, as a user would.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "LOOPBACK",
    "STACK_DIR",
    "STOP_ORDER",
    "ManagedProcess",
    "Stack",
    "StackError",
    "free_port",
    "parse_prometheus",
]

STACK_DIR = Path(".stack")
LOOPBACK = "127.0.0.1"
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

    def restart(self, name: str, env: Mapping[str, str] | None = None) -> None:
        """Stop ``name`` (SIGTERM, it flushes) and start the same command again, with ``env`` as its whole
        environment when given (e.g. ``service_process_env(...)`` plus a fault switch). StackError when it
        did not stop cleanly or exited at once."""
        old = self.processes[name]
        code = old.stop(self.stop_timeout_s)
        if old.killed or code not in (0, -signal.SIGTERM):
            raise StackError(f"{name} did not stop cleanly (exit {code}):\n{old.log_tail()}")
        process = ManagedProcess(name, old.argv, old.env if env is None else env, old.log_path)
        self.processes[name] = process
        process.start()
        self.check_running()

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
