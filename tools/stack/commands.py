"""The local stack: collector, api and worker as processes on loopback (``make demo``, ``make up``).

``demo`` runs the journeys against a fresh stack, then a short incident (the worker restarted with a fault
switch that fails every stem separation, a few guests asking for stems, the worker restarted clean), waits
until the collector's alert for it has fired and resolved, and prints the summary with ``== Alerts``; the
collector runs the default rules scaled to seconds (``demo_alerts``). ``up`` keeps the stack running
until Ctrl-C or SIGTERM, with the default rules. Both exit 0 only if every step worked and every process
stopped cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from collector.alerting import DEFAULT_RULES, read_alerts
from tools.stack.summary import (
    Incident,
    alert_episodes,
    detection,
    render_alerts_section,
    render_summary,
    summarize,
)
from tools.stack.supervisor import STACK_DIR, Stack, StackError

__all__ = ["DEMO_SEED", "DEMO_USERS", "INCIDENT_USERS", "demo", "demo_alerts", "main", "run_journeys", "up"]

DEMO_USERS = 12
DEMO_SEED = 7
INCIDENT_USERS = 6
"""Guests whose stem separations fail during the incident: more than the demo rules' ``min_count``."""
INCIDENT_FAULT = {"PHONOGLYPH_FAULT_SEPARATION_FAILURE_RATE": "1"}
INCIDENT_ALERT = "stem_separation_failing"
ALERT_FIRE_TIMEOUT_S = 30.0
ALERT_RESOLVE_TIMEOUT_S = 60.0

# The default rules scaled so that a few seconds of failures fire and a few quiet seconds resolve: the
# defaults (60 s windows, at least 8 outcomes, 60 s before a cleared alert resolves, 5 s evaluations)
# would need minutes of traffic and waiting, longer than the whole demo.
DEMO_WINDOW_S = 10.0
DEMO_MIN_COUNT = 4
DEMO_WAIT_S = 30.0  # stalled after_s, queue_age and delivery_backlog above_s
DEMO_KEEP_FIRING_S = 2.0
DEMO_EVALUATION_INTERVAL_S = 1.0
DEMO_RULES_NOTE = (
    f"the default rules scaled to the demo: windows {DEMO_WINDOW_S:g} s, at least {DEMO_MIN_COUNT} outcomes,"
    f" resolved after {DEMO_KEEP_FIRING_S:g} s clear, evaluated every {DEMO_EVALUATION_INTERVAL_S:g} s"
)


def demo_alerts() -> dict:
    """The ``alerts:`` section of the demo's collector: every default rule, same kind, subject, threshold
    and ignored error types, with demo-sized windows, counts and waits (see ``DEMO_RULES_NOTE``)."""
    rules = []
    for rule in DEFAULT_RULES:
        raw: dict = {"name": rule.name, "when": rule.when, "severity": rule.severity}
        for subject in ("operation", "route"):
            if getattr(rule, subject) is not None:
                raw[subject] = getattr(rule, subject)
        if rule.when in ("failure_rate", "http_error_rate", "latency_p95"):
            raw["window_s"] = min(rule.window_s, DEMO_WINDOW_S)
            raw["min_count"] = min(rule.min_count, DEMO_MIN_COUNT)
        if rule.when in ("failure_rate", "http_error_rate"):
            raw["above"] = rule.above
        if rule.when == "latency_p95":
            raw["above_ms"] = rule.above_ms
        if rule.when == "stalled":
            raw["after_s"] = min(rule.after_s, DEMO_WAIT_S)
        if rule.when in ("queue_age", "delivery_backlog"):
            raw["above_s"] = min(rule.above_s, DEMO_WAIT_S)
        if rule.ignore_error_types:
            raw["ignore_error_types"] = sorted(rule.ignore_error_types)
        raw["for_s"] = min(rule.for_s, DEMO_KEEP_FIRING_S)
        raw["keep_firing_for_s"] = DEMO_KEEP_FIRING_S
        raw["repeat_interval_s"] = 0
        rules.append(raw)
    return {"evaluation_interval_s": DEMO_EVALUATION_INTERVAL_S, "rules": rules}


class _Terminated(Exception):
    """SIGTERM received: unwind like Ctrl-C."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def _say(message: str) -> None:
    print(message, flush=True)


def run_journeys(stack: Stack, users: int, seed: int, timeout_s: float, *, stems_only: bool = False) -> int:
    """Run the journeys against the api, relaying their output with elapsed time. Returns the exit code."""
    started = time.monotonic()
    argv = [stack.python, "-m", "services.journeys", "--base-url", stack.api_url]
    argv += ["--users", str(users), "--seed", str(seed)] + (["--stems-only"] if stems_only else [])
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


def _alert_entry(stack: Stack, alertname: str, status: str, since: float, timeout_s: float) -> dict | None:
    """Poll the collector's alert history until ``alertname`` has a ``status`` entry at or after ``since``."""
    deadline = time.monotonic() + timeout_s
    while True:
        stack.check_running()
        _, history = read_alerts(stack.collector_data_dir)
        found = [e for e in history if e["alertname"] == alertname and e["status"] == status and e["at"] >= since]
        if found:
            return found[-1]  # newest first: the earliest one
        if time.monotonic() > deadline:
            return None
        time.sleep(0.25)


def run_incident(stack: Stack, args: argparse.Namespace) -> tuple[Incident, bool]:
    """Restart the worker with every stem separation failing, send a few guests' separations, wait for
    the incident's alert to fire, restart the worker clean, wait for the alert to resolve."""
    fault = " ".join(f"{name}={value}" for name, value in INCIDENT_FAULT.items())
    _say(f"Incident: the worker restarts with {fault}; {args.incident_users} guests ask for stems")
    stack.restart("worker", {**stack.service_process_env("phonoglyph-worker"), **INCIDENT_FAULT})
    started_at, clock = time.time(), time.monotonic()
    ok = True
    code = run_journeys(stack, args.incident_users, args.seed + 1, args.timeout, stems_only=True)
    if code != 0:
        _say(f"The incident's journeys failed (exit {code}).")
        ok = False
    fired = _alert_entry(stack, INCIDENT_ALERT, "firing", started_at, ALERT_FIRE_TIMEOUT_S)
    if fired is None:
        _say(f"The incident's alert {INCIDENT_ALERT} did not fire within {ALERT_FIRE_TIMEOUT_S:.0f} s.")
    else:
        _say(f"  [{time.monotonic() - clock:6.1f} s] {INCIDENT_ALERT} fired: {fired['summary']}")
    _say("Incident over: the worker restarts without the fault switch")
    stack.restart("worker", stack.service_process_env("phonoglyph-worker"))
    ended_at = time.time()
    incident = Incident(f"stem separations failing ({fault} on the worker)", INCIDENT_ALERT, started_at, ended_at)
    if fired is None:
        return incident, False
    resolved = _alert_entry(stack, INCIDENT_ALERT, "resolved", ended_at, ALERT_RESOLVE_TIMEOUT_S)
    if resolved is None:
        _say(f"The incident's alert {INCIDENT_ALERT} did not resolve within {ALERT_RESOLVE_TIMEOUT_S:.0f} s.")
        return incident, False
    _say(f"  [{time.monotonic() - clock:6.1f} s] {INCIDENT_ALERT} resolved: {resolved['summary']}")
    return incident, ok


def demo(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if root.exists():
        shutil.rmtree(root)  # a demo starts from nothing, so the summary counts this run only
    root.mkdir(parents=True)
    collector_config = (root / "collector.yaml").resolve()
    collector_config.write_text(yaml.safe_dump({"alerts": demo_alerts()}, sort_keys=False))
    stack = Stack(root=root, collector_env={"COLLECTOR_CONFIG": str(collector_config)})
    began = time.monotonic()
    ok = True
    incident: Incident | None = None
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
        incident, detected = run_incident(stack, args)
        ok &= detected
        _say("Stopping api and worker (they flush their telemetry) ...")
        ok &= stack.clean_exit(stack.stop_services())
        drained = stack.wait_until_drained(args.timeout, on_wait=progress.update)
        progress.done()
        if not drained:
            _say("The collector's outbox did not drain in time.")
            ok = False
        events = stack.stored_events()
        summary = summarize(events)
        episodes = alert_episodes(*read_alerts(stack.collector_data_dir))
        alerts = render_alerts_section(episodes, incident, rules=DEMO_RULES_NOTE)
        _say(render_summary(summary, stack, alerts=alerts))
        if not events or not summary.events_per_name.get("user_signed_up"):
            _say("No user_signed_up event arrived: the pipeline did not work end to end.")
            ok = False
        caught = detection(episodes, incident)
        if caught is None or caught.resolved_at is None:
            what = "did not fire" if caught is None else "did not resolve"
            _say(f"The incident's alert {INCIDENT_ALERT} {what}: detection did not work end to end.")
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
    took = f" Took {time.monotonic() - began:.0f} s."
    _say(f"\nDemo finished: every step worked.{took}" if ok else "\nDemo failed: see the messages above and the logs.")
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
    parser = argparse.ArgumentParser(prog="python -m tools.stack", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(STACK_DIR), help="data and logs directory (default .stack)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds allowed for each waiting step")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="start, run the journeys, summarize, stop")
    demo_parser.add_argument("--users", type=int, default=DEMO_USERS)
    demo_parser.add_argument("--seed", type=int, default=DEMO_SEED)
    demo_parser.add_argument(
        "--incident-users", type=int, default=INCIDENT_USERS, help="guests whose separations fail in the incident"
    )
    demo_parser.set_defaults(run=demo)
    commands.add_parser("up", help="start and keep running until Ctrl-C").set_defaults(run=up)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_terminated)
    return args.run(args)
