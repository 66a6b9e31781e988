"""tools.stack.supervisor: the processes' environments, Prometheus parsing, and process handling with real
subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.stack.supervisor import ManagedProcess, Stack, StackError, parse_prometheus


def test_parse_prometheus_sums_series_and_skips_comments():
    text = "\n".join(
        [
            "# HELP phonoglyph_collector_outbox_depth Events waiting in the outbox.",
            "# TYPE phonoglyph_collector_outbox_depth gauge",
            "phonoglyph_collector_outbox_depth 3",
            'phonoglyph_collector_dead_lettered_events_total{reason="bad"} 2',
            'phonoglyph_collector_dead_lettered_events_total{reason="big"} 1.5',
        ]
    )
    assert parse_prometheus(text) == {
        "phonoglyph_collector_outbox_depth": 3.0,
        "phonoglyph_collector_dead_lettered_events_total": 3.5,
    }


def test_service_environment_points_at_the_collector_and_never_at_posthog(tmp_path):
    stack = Stack(root=tmp_path, environ={"POSTHOG_API_KEY": "phc_real", "SENTRY_DSN": "https://k@sentry.test/1"})
    env = stack.service_process_env("phonoglyph-api")
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == stack.collector_url
    assert env["SENTRY_DSN"] == "https://k@sentry.test/1"
    assert "POSTHOG_API_KEY" not in env and "POSTHOG_API_KEY" not in stack.collector_process_env()
    assert stack.collector_process_env()["COLLECTOR_ENDPOINT"] == f"127.0.0.1:{stack.collector_port}"


def test_journeys_sign_with_the_services_billing_secret(tmp_path):
    stack = Stack(root=tmp_path, environ={}, service_env={"PHONOGLYPH_BILLING_SECRET": "s3"})
    assert stack.journeys_env()["PHONOGLYPH_BILLING_SECRET"] == "s3"
    assert Stack(root=tmp_path, environ={}).journeys_env()["PHONOGLYPH_BILLING_SECRET"]


def test_collector_env_can_point_at_a_posthog(tmp_path):
    posthog = {"POSTHOG_API_KEY": "phc_test", "POSTHOG_HOST": "http://127.0.0.1:9"}
    stack = Stack(root=tmp_path, environ={}, collector_env=posthog)
    assert stack.collector_process_env()["POSTHOG_API_KEY"] == "phc_test"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stop_ends_a_process_and_its_children(tmp_path):
    # The child starts a grandchild; both must be gone after stop().
    script = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print(p.pid, flush=True); time.sleep(60)"
    )
    process = ManagedProcess("sleeper", [sys.executable, "-c", script], dict(os.environ), tmp_path / "sleeper.log")
    process.start()
    deadline = time.monotonic() + 10
    while not process.log_path.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(process.log_path.read_text().split()[0])
    assert process.stop(timeout_s=5) == -signal.SIGTERM
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)
    assert not process.killed


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path):
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    process = ManagedProcess("stubborn", [sys.executable, "-c", script], dict(os.environ), tmp_path / "stubborn.log")
    process.start()
    deadline = time.monotonic() + 10
    while "ready" not in process.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.stop(timeout_s=0.5) == -signal.SIGKILL
    assert process.killed


def test_a_process_that_exits_early_fails_the_start_with_its_log(tmp_path):
    stack = Stack(root=tmp_path, ready_timeout_s=10)
    stack.processes["collector"] = ManagedProcess(
        "collector",
        [sys.executable, "-c", "print('boom: bad config'); raise SystemExit(2)"],
        dict(os.environ),
        tmp_path / "c.log",
    )
    stack.processes["collector"].start()
    with pytest.raises(StackError, match="boom: bad config"):
        stack.wait_http_ok("collector", f"{stack.collector_url}/readyz")
    assert stack.shutdown() == {"collector": 2}


def test_children_die_with_a_killed_runner(tmp_path):
    """Even a SIGKILLed runner (no finally, no atexit) leaves no process behind: the parent-death signal."""
    runner_script = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from tools.stack.supervisor import ManagedProcess\n"
        "child = ManagedProcess('sleeper', [sys.executable, '-c', 'import time; time.sleep(60)'], dict(os.environ),\n"
        f"                       Path({str(tmp_path / 'child.log')!r}))\n"
        "child.start()\n"
        "print(child.popen.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    runner = subprocess.Popen([sys.executable, "-c", runner_script], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(runner.stdout.readline())
        assert alive(child_pid)
    finally:
        runner.kill()
        runner.wait()
        runner.stdout.close()
    deadline = time.monotonic() + 10
    while alive_not_zombie(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive_not_zombie(child_pid)


def alive_not_zombie(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_restart_stops_the_process_and_starts_its_command_with_the_new_environment(tmp_path):
    script = "import os, time; print('switch', os.environ.get('SWITCH'), flush=True); time.sleep(60)"
    stack = Stack(root=tmp_path)
    stack.processes["worker"] = ManagedProcess(
        "worker", [sys.executable, "-c", script], {**os.environ, "SWITCH": "off"}, tmp_path / "worker.log"
    )
    stack.processes["worker"].start()
    first = stack.processes["worker"]
    log = tmp_path / "worker.log"
    try:
        wait_for_text(log, "switch off")
        stack.restart("worker", {**os.environ, "SWITCH": "on"})
        assert not first.running and stack.processes["worker"].running
        wait_for_text(log, "switch on")
        assert log.read_text().split("\n")[:2] == ["switch off", "switch on"]
    finally:
        codes = stack.shutdown()
    assert stack.clean_exit(codes)


def test_restart_refuses_a_process_that_did_not_stop_cleanly(tmp_path):
    stack = Stack(root=tmp_path, stop_timeout_s=5)
    stack.processes["worker"] = ManagedProcess(
        "worker", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ), tmp_path / "worker.log"
    )
    stack.processes["worker"].start()
    stack.processes["worker"].popen.wait()
    with pytest.raises(StackError, match="worker did not stop cleanly"):
        stack.restart("worker")


def wait_for_text(path: Path, text: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in (path.read_text() if path.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
