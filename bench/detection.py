"""Detection benchmark (issue 9): scripted incidents and noise against the real stack, default alert rules.

    .venv/bin/python bench/detection.py [--quick] [--only NAME] [--parallel 4] [--repeat N]

Each scenario runs on its own fresh stack (``tools.stack.Stack``: collector, api and worker as processes on
loopback, local store; the collector with no ``alerts:`` section, so its DEFAULT rules apply), with
``COLLECTOR_ALERT_WEBHOOK_URL`` pointing at a recording webhook server in this process (one path per
scenario, so every notification is attributed to the stack that sent it). A steady background load
(virtual users signing up, uploading small generated WAVs, separating stems, analysing and rendering,
each waiting for its jobs) runs throughout. Incidents are caused from outside (SIGKILL, a fake PostHog
that refuses) or by the services' fault switches (README "Fault switches"), by restarting the api or the
worker with the switch set; the incident's start is recorded once the switched process is started.

Per incident: detected or not (a firing notification of one of the incident's rules after its start,
within a bounded wait), the time from the start to that notification, then the incident is ended and its
resolution awaited (bounded). Noise (steady 3 % separation failures, a 4xx flood, one slow request,
SIGTERM restarts of api, worker and collector, then a quiet tail longer than the stall rules' after_s):
every firing notification there is false, as is any firing notification of an incident's stack that is
not about the incident. Summary: detection rate, MTTD p50/p95, precision, beside the issue's targets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from collector.alerting.config import DEFAULT_RULES  # noqa: E402
from services.audio.wav import encode  # noqa: E402
from services.journeys.client import ApiClient  # noqa: E402
from services.journeys.signals import BAD_UPLOADS, make_bad_upload, make_track  # noqa: E402
from tests.fakes.posthog import FakePostHog  # noqa: E402
from tools.stack.supervisor import LOOPBACK, ManagedProcess, Stack, StackError  # noqa: E402

ABORT = threading.Event()
"""Set on Ctrl-C/SIGTERM: every wait returns early and every scenario stops its stack."""
START = time.monotonic()
_PRINT = threading.Lock()

RULES = {rule.name: rule for rule in DEFAULT_RULES}
STALL_AFTER_S = max(rule.after_s for rule in DEFAULT_RULES if rule.when == "stalled")
BACKLOG_ABOVE_S = RULES["analytics_backlog"].above_s
QUEUE_ABOVE_S = RULES["jobs_waiting"].above_s
SURGE_TARGET_S = 60.0
POSTHOG_KEY = "phc_detection_bench"


def say(scenario: str, message: str) -> None:
    with _PRINT:
        print(f"[{time.monotonic() - START:7.1f} s] {scenario:22s} {message}", flush=True)


def pause(seconds: float) -> None:
    ABORT.wait(max(0.0, seconds))
    if ABORT.is_set():
        raise KeyboardInterrupt


# -- the webhook receiver ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    scenario: str
    at: float  # time.monotonic() at arrival
    status: str
    alertname: str
    subject: str
    summary: str


class Recorder:
    """An Alertmanager-webhook receiver on loopback; ``/hook/<scenario>`` records that scenario's alerts."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._items: list[Notification] = []
        self.bad_requests = 0
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                scenario = self.path.rsplit("/", 1)[-1]
                try:
                    payload = json.loads(body)
                    recorder._record(scenario, payload)
                    status = 200
                except (ValueError, KeyError, TypeError, AttributeError):
                    with recorder._lock:
                        recorder.bad_requests += 1
                    status = 400
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)

    def start(self) -> Recorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, scenario: str) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}/hook/{scenario}"

    def _record(self, scenario: str, payload: dict) -> None:
        now = time.monotonic()
        if payload.get("version") != "4":
            raise ValueError("not an Alertmanager webhook (version 4)")
        items = []
        for alert in payload["alerts"]:
            labels = alert["labels"]
            subject = labels.get("operation") or labels.get("route") or ""
            summary = (alert.get("annotations") or {}).get("summary", "")
            items.append(Notification(scenario, now, alert["status"], labels["alertname"], subject, summary))
        with self._lock:
            self._items.extend(items)
            self._lock.notify_all()
        for item in items:
            say(scenario, f"<- webhook: {item.status} {item.alertname} [{item.subject}] {item.summary}")

    def notifications(self, scenario: str) -> list[Notification]:
        with self._lock:
            return [item for item in self._items if item.scenario == scenario]

    def wait(self, scenario: str, match: Callable[[Notification], bool], timeout_s: float) -> Notification | None:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                for item in self._items:
                    if item.scenario == scenario and match(item):
                        return item
                remaining = deadline - time.monotonic()
                if remaining <= 0 or ABORT.is_set():
                    return None
                self._lock.wait(min(remaining, 1.0))


class RefusingPostHog(FakePostHog):
    """The strict fake PostHog, answering 503 to every request while ``refusing`` is set."""

    refusing = False

    def _next_answer(self):
        return 503 if self.refusing else super()._next_answer()


# -- the background load -----------------------------------------------------------------------------


class Load:
    """``users`` virtual users in a loop: sign up, project, upload a short WAV, stems + analysis + 2 renders,
    wait for the jobs (bounded), pause ``pace_s``. Every error is counted and the loop goes on."""

    JOB_PATHS = {"stems": "/stems/", "analysis": "/analysis/", "renders": "/renders/"}

    def __init__(self, api_url: str, *, users: int, pace_s: float, seed: int, job_wait_s: float = 60.0) -> None:
        self.api_url = api_url
        self.users = users
        self.pace_s = pace_s
        self.seed = seed
        self.job_wait_s = job_wait_s
        self.stop_event = threading.Event()
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def count(self, key: str) -> None:
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def start(self) -> Load:
        for index in range(self.users):
            thread = threading.Thread(target=self._user, args=(index,), name=f"load-{index}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def _stopped(self) -> bool:
        return self.stop_event.is_set() or ABORT.is_set()

    def _user(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        client = ApiClient(self.api_url, timeout_s=10.0)
        self.stop_event.wait(rng.uniform(0, self.pace_s))
        while not self._stopped():
            try:
                self._cycle(client, rng)
            except OSError:
                self.count("connection_error")
            self.stop_event.wait(self.pace_s * rng.uniform(0.7, 1.3))

    def _call(self, client: ApiClient, method: str, path: str, ok: int, **kwargs):
        answer = client.request(method, path, **kwargs)
        self.count(f"http.{answer.status // 100}xx")
        return answer if answer.status == ok else None

    def _cycle(self, client: ApiClient, rng: random.Random) -> None:
        email = f"bench-{uuid.uuid4().hex[:12]}@example.test"
        answer = self._call(client, "POST", "/auth/signup", 201, json_body={"email": email})
        if answer is None:
            return
        headers = {"Authorization": f"Bearer {answer.json()['token']}"}
        answer = self._call(client, "POST", "/projects", 201, json_body={"name": "bench"}, headers=headers)
        if answer is None:
            return
        body, _tempo = make_track(rng, duration_s=rng.uniform(1.0, 2.0))
        path = f"/projects/{answer.json()['project_id']}/files?filename=track.wav"
        answer = self._call(client, "POST", path, 201, body=body, headers={**headers, "Content-Type": "audio/wav"})
        if answer is None:
            return
        file_id = answer.json()["file_id"]
        self.count("uploads")
        jobs: list[tuple[str, str]] = []
        # signing up gives 10 credits, a render costs 5: two renders a cycle
        for kind, id_key in (
            ("stems", "job_id"),
            ("analysis", "job_id"),
            ("renders", "render_id"),
            ("renders", "render_id"),
        ):
            answer = self._call(client, "POST", f"/files/{file_id}/{kind}", 202, headers=headers)
            if answer is not None:
                jobs.append((kind, answer.json()[id_key]))
        deadline = time.monotonic() + self.job_wait_s
        for kind, job_id in jobs:
            while not self._stopped():
                answer = client.request("GET", self.JOB_PATHS[kind] + job_id, headers=headers)
                status = answer.json().get("status") if answer.status == 200 else None
                if status in ("completed", "failed"):
                    self.count(f"{kind}.{status}")
                    break
                if time.monotonic() > deadline:
                    self.count(f"{kind}.waited_out")
                    break
                self.stop_event.wait(0.3)


def flood_4xx(api_url: str, duration_s: float, rate_per_s: float, seed: int) -> dict[str, int]:
    """Bad uploads (415/422/400), bad tokens (401) and unknown ids (404) for ``duration_s``."""
    rng = random.Random(seed)
    client = ApiClient(api_url)
    counts: dict[str, int] = {}
    signup = client.request("POST", "/auth/signup", json_body={"email": f"flood-{uuid.uuid4().hex[:8]}@x.test"})
    headers = {"Authorization": f"Bearer {signup.json()['token']}"}
    project = client.request("POST", "/projects", json_body={"name": "flood"}, headers=headers).json()["project_id"]
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline and not ABORT.is_set():
        choice = rng.random()
        try:
            if choice < 0.4:
                body, content_type = make_bad_upload(rng.choice(BAD_UPLOADS), rng)
                path = f"/projects/{project}/files?filename=bad.wav"
                answer = client.request("POST", path, body=body, headers={**headers, "Content-Type": content_type})
            elif choice < 0.7:
                answer = client.request("GET", "/projects", headers={"Authorization": "Bearer not-a-token"})
            else:
                path = rng.choice(("/projects/p_missing", "/stems/j_missing", "/renders/r_missing", "/nope"))
                answer = client.request("GET", path, headers=headers)
            key = str(answer.status)
        except OSError:
            key = "connection_error"
        counts[key] = counts.get(key, 0) + 1
        ABORT.wait(1.0 / rate_per_s)
    return counts


def long_separation(api_url: str, duration_s: float) -> tuple[ApiClient, dict[str, str], str, float, int]:
    """Sign up, upload a long mono 16-bit WAV of ``duration_s`` and ask for its stems.

    Returns (client, headers, job id, upload seconds, bytes)."""
    client = ApiClient(api_url, timeout_s=120.0)
    signup = client.request("POST", "/auth/signup", json_body={"email": f"long-{uuid.uuid4().hex[:8]}@x.test"})
    headers = {"Authorization": f"Bearer {signup.json()['token']}"}
    project = client.request("POST", "/projects", json_body={"name": "long"}, headers=headers).json()["project_id"]
    rate = 22050
    t_s = np.arange(int(duration_s * rate)) / rate
    samples = 0.3 * np.sin(2 * np.pi * 220.0 * t_s) + 0.02 * np.random.default_rng(1).standard_normal(t_s.size)
    body = encode(samples, rate, bits_per_sample=16)
    started = time.monotonic()
    upload = client.request(
        "POST",
        f"/projects/{project}/files?filename=long.wav",
        body=body,
        headers={**headers, "Content-Type": "audio/wav"},
    )
    if upload.status != 201:
        raise ValueError(f"the long upload answered {upload.status}: {upload.body[:200]!r}")
    upload_s = time.monotonic() - started
    job = client.request("POST", f"/files/{upload.json()['file_id']}/stems", headers=headers).json()["job_id"]
    return client, headers, job, upload_s, len(body)


def slow_request(api_url: str, duration_s: float, timeout_s: float) -> str:
    """One long upload and its stem separation, waited for."""
    started = time.monotonic()
    client, headers, job, upload_s, size = long_separation(api_url, duration_s)
    deadline = time.monotonic() + timeout_s
    status = "queued"
    while time.monotonic() < deadline and not ABORT.is_set():
        status = client.request("GET", f"/stems/{job}", headers=headers).json()["status"]
        if status in ("completed", "failed"):
            break
        ABORT.wait(0.5)
    total_s = time.monotonic() - started
    return f"{size / 1e6:.1f} MB upload in {upload_s:.1f} s, its separation {status} after {total_s:.0f} s"


# -- the stack --------------------------------------------------------------------------------------


_STRIPPED_ENV = ("SENTRY_DSN", "COLLECTOR_CONFIG", "POSTHOG_API_KEY", "POSTHOG_HOST", "COLLECTOR_DATA_DIR")


def clean_environ() -> dict[str, str]:
    """This process's environment without anything that would change the stack under test."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _STRIPPED_ENV
        and not key.startswith(("OTEL_", "PHONOGLYPH_FAULT_", "COLLECTOR_ALERT", "COLLECTOR_"))
    }
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def process_env(stack: Stack, name: str) -> dict[str, str]:
    if name == "collector":
        return stack.collector_process_env()
    return stack.service_process_env("phonoglyph-api" if name == "api" else "phonoglyph-worker")


def start_process(stack: Stack, name: str, extra_env: dict[str, str] | None = None) -> None:
    """(Re)start ``name`` with its usual command and environment plus ``extra_env``; wait for readiness."""
    old = stack.processes[name]
    env = process_env(stack, name)
    env.update(extra_env or {})
    process = ManagedProcess(name, old.argv, env, old.log_path)
    stack.processes[name] = process
    process.start()
    if name == "collector":
        stack.wait_http_ok(name, f"{stack.collector_url}/readyz")
    elif name == "api":
        stack.wait_http_ok(name, f"{stack.api_url}/health")


def restart(stack: Stack, name: str, extra_env: dict[str, str] | None = None) -> int | None:
    """SIGTERM (then SIGKILL after the grace period) and start again: how a deploy or a switch flip looks."""
    code = stack.processes[name].stop(stack.stop_timeout_s)
    start_process(stack, name, extra_env)
    return code


def job_status(stack: Stack, job_id: str) -> tuple[str | None, int]:
    """(status, attempts) of a job, read from the services' database."""
    with contextlib.closing(sqlite3.connect(f"file:{stack.root / 'phonoglyph.db'}?mode=ro", uri=True)) as db:
        db.execute("PRAGMA busy_timeout = 2000")
        row = db.execute("SELECT status, attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return (row[0], row[1]) if row else (None, 0)


# -- scenarios --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a scenario saw: its incident's start, first true firing notification, end and resolution."""

    name: str
    kind: str  # surge | 5xx | stall | latency | backlog | noise
    accepted: tuple[str, ...] = ()
    target_s: float | None = None
    started_at: float | None = None
    first: Notification | None = None
    ended_at: float | None = None
    resolved: Notification | None = None
    notes: list[str] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    error: str | None = None

    @property
    def mttd_s(self) -> float | None:
        if self.first is None or self.started_at is None:
            return None
        return self.first.at - self.started_at

    def is_true(self, item: Notification) -> bool:
        return (
            self.kind != "noise"
            and item.alertname in self.accepted
            and self.started_at is not None
            and item.at >= self.started_at
        )

    @property
    def firing(self) -> list[Notification]:
        return [item for item in self.notifications if item.status == "firing"]

    @property
    def false_firing(self) -> list[Notification]:
        return [item for item in self.firing if not self.is_true(item)]


@dataclass
class Context:
    name: str
    args: argparse.Namespace
    recorder: Recorder
    outcome: Outcome
    stack: Stack | None = None
    load: Load | None = None

    def say(self, message: str) -> None:
        say(self.name, message)

    def begin(self, note: str) -> None:
        self.outcome.started_at = time.monotonic()
        self.say(f"INCIDENT START: {note}")

    def detect(self, timeout_s: float) -> None:
        outcome = self.outcome
        self.say(f"waiting up to {timeout_s:.0f} s for a firing notification of {', '.join(outcome.accepted)}")
        first = self.recorder.wait(self.name, lambda n: n.status == "firing" and outcome.is_true(n), timeout_s)
        pause(0)  # raises when interrupted: an aborted wait is not a miss
        outcome.first = first
        if first is None:
            self.say(f"NOT DETECTED within {timeout_s:.0f} s")
        else:
            self.say(f"DETECTED by {first.alertname} [{first.subject}] after {outcome.mttd_s:.1f} s")

    def end(self, note: str) -> None:
        self.outcome.ended_at = time.monotonic()
        self.say(f"INCIDENT END: {note}")

    def await_resolution(self, timeout_s: float) -> None:
        first = self.outcome.first
        if first is None:
            return
        resolved = self.recorder.wait(
            self.name,
            lambda n: n.status == "resolved" and (n.alertname, n.subject) == (first.alertname, first.subject),
            timeout_s,
        )
        pause(0)
        self.outcome.resolved = resolved
        if resolved is None:
            self.outcome.notes.append(f"not resolved within {timeout_s:.0f} s of the end")
            self.say(f"not resolved within {timeout_s:.0f} s of the end")
        else:
            self.say(f"resolved {resolved.at - self.outcome.ended_at:.1f} s after the end")


def scenario_surge(ctx: Context) -> None:
    pause(ctx.args.warmup_s)
    restart(ctx.stack, "worker", {"PHONOGLYPH_FAULT_SEPARATION_FAILURE_RATE": "0.8"})
    ctx.begin("worker restarted with PHONOGLYPH_FAULT_SEPARATION_FAILURE_RATE=0.8")
    ctx.detect(180)
    restart(ctx.stack, "worker")
    ctx.end("worker restarted without the switch")
    ctx.await_resolution(ctx.args.resolve_s)


def scenario_5xx(ctx: Context) -> None:
    pause(ctx.args.warmup_s)
    rate = f"{ctx.args.http_5xx_rate:g}"
    restart(ctx.stack, "api", {"PHONOGLYPH_FAULT_HTTP_5XX_RATE": rate, "PHONOGLYPH_FAULT_HTTP_5XX_ROUTE": "/projects"})
    ctx.begin(f"api restarted with PHONOGLYPH_FAULT_HTTP_5XX_RATE={rate} on /projects")
    ctx.detect(180)
    restart(ctx.stack, "api")
    ctx.end("api restarted without the switch")
    ctx.await_resolution(ctx.args.resolve_s)


def scenario_latency(ctx: Context) -> None:
    pause(ctx.args.warmup_s + 30)  # the 600 s window's min_count of 20 renders is reached by the warm-up traffic
    delay_s = ctx.args.render_delay_s
    restart(
        ctx.stack,
        "worker",
        {"PHONOGLYPH_FAULT_OPERATION": "render", "PHONOGLYPH_FAULT_OPERATION_DELAY_S": str(delay_s)},
    )
    ctx.begin(f"worker restarted with every render {delay_s:g} s slower")
    ctx.detect(480)
    restart(ctx.stack, "worker")
    ctx.end("worker restarted without the delay")
    ctx.await_resolution(min(ctx.args.resolve_s, 120))


def scenario_worker_killed(ctx: Context) -> None:
    pause(ctx.args.warmup_s)
    # a separation long enough (a 150 s track: several seconds of work) to be killed in the middle of it
    _client, _headers, job, _upload_s, _size = long_separation(ctx.stack.api_url, 150.0)
    status = None
    deadline = time.monotonic() + 60
    while status != "running" and time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.Error):
            status = job_status(ctx.stack, job)[0]
        if status != "running":
            pause(0.1)
    if status == "running":
        pause(1.5)  # its stem_separation_started record leaves the worker's 500 ms export batch first
    ctx.stack.processes["worker"].kill()
    ctx.begin(f"worker SIGKILLed (the long separation {job}: {status}), not restarted")
    ctx.detect(STALL_AFTER_S + 90)
    start_process(ctx.stack, "worker")
    ctx.end("worker started again")
    ctx.await_resolution(ctx.args.resolve_s)
    with contextlib.suppress(sqlite3.Error):
        after, attempts = job_status(ctx.stack, job)
        # a job killed mid-run is 'running' at the kill and claimed again after its lease: 2 attempts
        ctx.outcome.notes.append(f"the killed separation was {status} at the kill; now {after}, {attempts} attempt(s)")


def scenario_posthog(ctx: Context, posthog: RefusingPostHog) -> None:
    pause(ctx.args.warmup_s)
    posthog.refusing = True
    ctx.begin("the fake PostHog answers 503 to every delivery")
    ctx.detect(BACKLOG_ABOVE_S + 90)
    posthog.refusing = False
    ctx.end("the fake PostHog accepts again")
    ctx.await_resolution(ctx.args.resolve_s)


def scenario_noise(ctx: Context) -> None:
    quick = ctx.args.quick
    ctx.say("steady 3 % separation failures (worker switch 0.03, on for the whole scenario)")
    pause(60 if quick else 120)
    flood_s = 30 if quick else 60
    ctx.say(f"4xx flood for {flood_s} s: bad uploads, bad tokens, unknown ids (5 requests/s)")
    counts = flood_4xx(ctx.stack.api_url, flood_s, 5.0, ctx.args.seed)
    ctx.outcome.notes.append(f"4xx flood answers: {dict(sorted(counts.items()))}")
    ctx.say(f"flood answers: {counts}")
    ctx.say("one slow request: a 400 s WAV upload and its stem separation")
    text = slow_request(ctx.stack.api_url, 400.0, 180.0)
    ctx.outcome.notes.append(f"slow request: {text}")
    ctx.say(f"slow request: {text}")
    for name in ("api", "worker", "collector"):
        code = restart(ctx.stack, name, NOISE_WORKER_ENV if name == "worker" else None)
        ctx.say(f"{name} restarted (SIGTERM, exit {code}) and started again")
        ctx.outcome.notes.append(f"{name} restart: exit {code}")
        pause(15)
    tail_s = 60 if quick else STALL_AFTER_S + 45
    ctx.say(
        f"quiet tail of {tail_s:.0f} s (a start lost in a restart would show as stalled after {STALL_AFTER_S:.0f} s)"
    )
    pause(tail_s)


NOISE_WORKER_ENV = {"PHONOGLYPH_FAULT_SEPARATION_FAILURE_RATE": "0.03"}

STALL_RULES = tuple(rule.name for rule in DEFAULT_RULES if rule.when in ("stalled", "queue_age"))


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str
    accepted: tuple[str, ...]
    target_s: float | None
    run: Callable[..., None]
    minutes: float  # rough duration, to start the longest first


SPECS = (
    Spec("noise", "noise", (), None, scenario_noise, 11),
    Spec("worker_killed", "stall", STALL_RULES, STALL_AFTER_S + 30, scenario_worker_killed, 8),
    Spec("posthog_refusing", "backlog", ("analytics_backlog",), BACKLOG_ABOVE_S + 30, scenario_posthog, 8),
    Spec("render_latency", "latency", ("render_slow", "render_stalled", "jobs_waiting"), None, scenario_latency, 7),
    Spec("separation_surge", "surge", ("stem_separation_failing",), SURGE_TARGET_S, scenario_surge, 4),
    Spec("api_5xx_burst", "5xx", ("api_5xx", "api_5xx_total"), SURGE_TARGET_S, scenario_5xx, 5),
)
QUICK = ("noise", "separation_surge", "api_5xx_burst")


def run_scenario(spec: Spec, args: argparse.Namespace, recorder: Recorder, base: Path) -> Outcome:
    outcome = Outcome(spec.name, spec.kind, spec.accepted, spec.target_s)
    ctx = Context(spec.name, args, recorder, outcome)
    collector_env = {"COLLECTOR_ALERT_WEBHOOK_URL": recorder.url(spec.name)}
    service_env: dict[str, str] = {}
    if args.metric_export_interval_ms:
        service_env["OTEL_METRIC_EXPORT_INTERVAL"] = str(args.metric_export_interval_ms)
    if spec.kind == "noise":
        service_env.update(NOISE_WORKER_ENV)
    posthog = None
    extra: tuple = ()
    if spec.kind == "backlog":
        posthog = RefusingPostHog(api_keys=(POSTHOG_KEY,)).start()
        collector_env.update(POSTHOG_API_KEY=POSTHOG_KEY, POSTHOG_HOST=posthog.host)
        extra = (posthog,)
    stack = Stack(root=base / spec.name, environ=clean_environ(), collector_env=collector_env, service_env=service_env)
    ctx.stack = stack
    try:
        ctx.say(f"starting a fresh stack under {stack.root}")
        stack.start()
        ctx.load = Load(stack.api_url, users=args.users, pace_s=args.pace_s, seed=args.seed).start()
        ctx.say(f"stack up (api {stack.api_url}, collector {stack.collector_url}); load: {args.users} users")
        spec.run(ctx, *extra)
    except KeyboardInterrupt:
        outcome.error = "interrupted"
    except (StackError, OSError, ValueError, KeyError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
        ctx.say(f"ERROR {outcome.error}")
    finally:
        if ctx.load is not None:
            ctx.load.stop()
            outcome.notes.append(f"load: {dict(sorted(ctx.load.counts.items()))}")
        stack.shutdown()
        if posthog is not None:
            posthog.stop()
        outcome.notifications = recorder.notifications(spec.name)
        ctx.say("stack stopped")
    return outcome


# -- the report ---------------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(np.ceil(share * len(ordered))) - 1))
    return ordered[rank]


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def report(outcomes: list[Outcome], command: str) -> str:
    lines = [f"Reproduce: {command}", ""]
    # never got to its incident, or was interrupted before its end: listed, not counted
    failed = [o for o in outcomes if o.error and (o.started_at is None or o.error == "interrupted")]
    incidents = [o for o in outcomes if o.kind != "noise" and o not in failed]
    lines += [
        "| incident | detected | first notification | MTTD | target | resolved after the end |",
        "|---|---|---|---|---|---|",
    ]
    for o in incidents:
        detected = "yes" if o.first else "**no**"
        first = f"`{o.first.alertname}` [{o.first.subject}]" if o.first else "-"
        target = f"<= {o.target_s:.0f} s" if o.target_s else "detected"
        met = "" if o.first is None else (" (met)" if o.target_s is None or o.mttd_s <= o.target_s else " (**missed**)")
        resolved = "-"
        if o.resolved is not None and o.ended_at is not None:
            resolved = fmt_s(o.resolved.at - o.ended_at)
        elif o.first is not None:
            resolved = "not within the wait"
        lines.append(f"| {o.name} | {detected} | {first} | {fmt_s(o.mttd_s)}{met} | {target} | {resolved} |")
    lines.append("")
    all_firing = [n for o in outcomes for n in o.firing]
    false = [(o.name, n) for o in outcomes for n in o.false_firing]
    for o in outcomes:
        if o.kind == "noise":
            lines.append(
                f"Noise ({o.name}): {len(o.firing)} false notification(s)"
                + (f"; error: {o.error.strip().splitlines()[-1]}" if o.error else "")
            )
    for name, n in false:
        lines.append(f"  false: {name}: {n.alertname} [{n.subject}] {n.summary}")
    detected = [o for o in incidents if o.first]
    mttds = [o.mttd_s for o in detected]
    surge = [o.mttd_s for o in detected if o.kind in ("surge", "5xx")]
    stalls = [o.mttd_s for o in detected if o.kind == "stall"]
    true_count = len(all_firing) - len(false)
    lines += [
        "",
        "| figure | measured | target |",
        "|---|---|---|",
        f"| detection rate | {len(detected)}/{len(incidents)}"
        + (f" ({100 * len(detected) / len(incidents):.0f} %)" if incidents else "")
        + " | every incident (> 95 %) |",
        f"| MTTD p50 / p95, all incidents | {fmt_s(percentile(mttds, 0.5))} / {fmt_s(percentile(mttds, 0.95))}"
        " | < 5 min |",
        f"| MTTD p95, surges and 5xx bursts | {fmt_s(percentile(surge, 0.95))} | <= {SURGE_TARGET_S:.0f} s |",
        f"| stall detection (worst) | {fmt_s(max(stalls) if stalls else None)}"
        f" | <= after_s + 30 = {STALL_AFTER_S + 30:.0f} s |",
        f"| false notifications | {len(false)} | 0 |",
        f"| precision (true / all firing) | {true_count}/{len(all_firing)}"
        + (f" ({100 * true_count / len(all_firing):.0f} %)" if all_firing else "")
        + " | > 90 % |",
    ]
    notes = [f"- {o.name}: {note}" for o in outcomes for note in o.notes]
    errors = [f"- {o.name}: ERROR (not counted) {o.error.strip().splitlines()[-1]}" for o in failed]
    errors += [f"- {o.name}: ERROR {o.error.strip().splitlines()[-1]}" for o in outcomes if o.error and o not in failed]
    if notes or errors:
        lines += ["", "Notes:", *errors, *notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/detection.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}, shorter noise")
    parser.add_argument("--only", action="append", choices=[spec.name for spec in SPECS], help="run this scenario")
    parser.add_argument("--parallel", type=int, default=3, help="scenarios at once, each on its own stack")
    parser.add_argument("--users", type=int, default=2, help="virtual users of the background load per stack")
    parser.add_argument("--pace-s", type=float, default=6.0, help="pause of a virtual user between cycles")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="load before an incident starts")
    parser.add_argument("--resolve-s", type=float, default=240.0, help="bounded wait for resolution")
    parser.add_argument("--repeat", type=int, default=1, help="run each chosen scenario this many times")
    parser.add_argument("--http-5xx-rate", type=float, default=0.5, help="5xx burst: share of /projects answered 500")
    parser.add_argument("--render-delay-s", type=float, default=40.0, help="latency incident: delay per render")
    parser.add_argument(
        "--metric-export-interval-ms",
        type=int,
        default=0,
        help="OTEL_METRIC_EXPORT_INTERVAL of api and worker (default 0: the services' own default, 10 s)",
    )
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--keep", action="store_true", help="keep the stacks' data and logs")
    parser.add_argument("--markdown", help="also write the report to this file")
    args = parser.parse_args(argv)
    command = " ".join([".venv/bin/python", "bench/detection.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"Reproduce: {command}", flush=True)
    names = args.only or (list(QUICK) if args.quick else [spec.name for spec in SPECS])
    chosen = [spec for spec in SPECS if spec.name in names]
    if args.repeat > 1:  # each scenario again on its own fresh stack: more samples for the percentiles
        chosen = [replace(spec, name=f"{spec.name}-{n}") for spec in chosen for n in range(1, args.repeat + 1)]
    specs = sorted(chosen, key=lambda spec: -spec.minutes)
    print(
        f"Scenarios: {', '.join(spec.name for spec in specs)}; {args.parallel} at once; "
        f"load {args.users} users/stack, pace {args.pace_s:g} s; OTEL_METRIC_EXPORT_INTERVAL="
        f"{args.metric_export_interval_ms or 'default'}; default rules: {', '.join(RULES)}",
        flush=True,
    )
    base = Path(tempfile.mkdtemp(prefix="detection-bench-"))
    recorder = Recorder().start()
    for signum in (signal.SIGINT, signal.SIGTERM):  # every scenario stops its stack and reports what it saw
        signal.signal(signum, lambda *_: ABORT.set())
    pool = ThreadPoolExecutor(max_workers=max(1, args.parallel))
    futures = []
    try:
        futures = [pool.submit(run_scenario, spec, args, recorder, base) for spec in specs]
        while not all(future.done() for future in futures) and not ABORT.wait(0.5):
            pass
        if ABORT.is_set():
            print("\nInterrupted: stopping every stack ...", flush=True)
    except KeyboardInterrupt:
        print("\nInterrupted: stopping every stack ...", flush=True)
    finally:
        if not all(future.done() for future in futures):
            ABORT.set()  # every scenario stops its stack and returns what it saw
        pool.shutdown(wait=True, cancel_futures=True)
        recorder.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"Data and logs kept under {base}", flush=True)
    outcomes = [future.result() for future in futures if future.done() and not future.cancelled()]
    text = report(outcomes, command)
    print("\n" + text, flush=True)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
