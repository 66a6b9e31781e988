"""The local stack: collector, api and worker as processes on loopback (``make demo``, ``make up``).

``demo`` runs the journeys against a fresh stack and prints the summary; ``up`` keeps the stack running
until Ctrl-C or SIGTERM. Both exit 0 only if every step worked and every process stopped cleanly.
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

from tools.stack.summary import render_summary, summarize
from tools.stack.supervisor import STACK_DIR, Stack, StackError

__all__ = ["DEMO_SEED", "DEMO_USERS", "demo", "main", "run_journeys", "up"]

DEMO_USERS = 12
DEMO_SEED = 7


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
    parser = argparse.ArgumentParser(prog="python -m tools.stack", description=__doc__.splitlines()[0])
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
