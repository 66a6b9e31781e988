"""Run the collector the way a user does (``python -m collector serve``) on a free loopback port."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

_LISTENING = re.compile(r"listening on (http://\S+)")
START_TIMEOUT_S = 30.0


class CollectorProcess:
    def __init__(self, workdir: Path, *, env: dict[str, str] | None = None, config_yaml: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.env = {key: value for key, value in os.environ.items() if not key.startswith(("POSTHOG_", "COLLECTOR_"))}
        self.env.update(
            {"COLLECTOR_ENDPOINT": "127.0.0.1:0", "COLLECTOR_DATA_DIR": str(self.data_dir), "PYTHONUNBUFFERED": "1"}
        )
        if config_yaml is not None:
            config_path = self.workdir / "collector.yaml"
            config_path.write_text(config_yaml)
            self.env["COLLECTOR_CONFIG"] = str(config_path)
        self.env.update(env or {})
        self.stderr_path = self.workdir / "collector.stderr"
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.first_line = ""

    def start(self) -> CollectorProcess:
        with open(self.stderr_path, "ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "collector", "serve"],
                env=self.env,
                cwd=self.workdir,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.process.stdout.readline()), daemon=True).start()
        try:
            self.first_line = lines.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            self.first_line = ""
        match = _LISTENING.search(self.first_line)
        if match is None:
            self.kill()
            raise RuntimeError(f"collector did not start: {self.first_line!r}\n{self.stderr()}")
        self.url = match.group(1)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"collector never became ready\n{self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (a drain), then SIGKILL if it does not exit in time; returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process.stdout.close()
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def cli(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "collector", *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        label_text = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        series = f"phonoglyph_collector_{name}" + (f"{{{label_text}}}" if label_text else "")
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return 0.0

    def __enter__(self) -> CollectorProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def wait_for(predicate, *, timeout_s: float = 20.0, interval_s: float = 0.05, message: str = "condition"):
    """Poll until predicate() is truthy (returns it) or fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(interval_s)
