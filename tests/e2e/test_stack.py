"""The whole system as real processes, started the way `make demo` starts them (tools.stack).

One run (module fixture) with a strict fake PostHog (``POSTHOG_API_KEY``/``POSTHOG_HOST``) and a recording
fake Sentry (``SENTRY_DSN``): scripted users whose expected events are known, with secrets seeded in
headers, query strings, bodies and an exception message, a file fault that makes the worker fail with an
unexpected error, the journeys, and a kill -9 and restart of the collector in the middle, while a delivery
to PostHog is in flight. The tests then read what the fakes received.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from services.audio.wav import encode
from tests.fakes.posthog import FakePostHog
from tests.fakes.sentry import FakeSentry
from tools.stack.supervisor import Stack

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_S = 60.0
OUTBOX_DEPTH = "phonoglyph_collector_outbox_depth"
DRAIN_TIMEOUT_S = 60.0

# Seeded secrets, each in a form a scrubber can recognise (credentials by name or shape, personal data).
SEEDS = {
    "query_token": "qtok4b1d9e7c55f0aa31",
    "query_password": "qpw-hunter2-8c1f0e",
    "query_api_key": "qkey5e2a7b90c1d34f",
    "header_api_key": "hkey-0b6f3a9d1e7c2b55",
    "body_email_local": "jane.seeded.8d2f",
    "body_card": "4111 1111 1111 1111",
    "exception_token": "etok7f3c9a1b2d4e6f80",
    "billing_secret": "bsec-1f8e2d7c6b5a4930",
}


def isolated_environ() -> dict[str, str]:
    """This process's environment without any setting of the stack's own (a developer's keys never leak in)."""
    prefixes = ("SENTRY_", "POSTHOG_", "OTEL_", "COLLECTOR_", "PHONOGLYPH_")
    return {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}


def wav_bytes(seed: int, duration_s: float = 1.5) -> bytes:
    rng = np.random.default_rng(seed)
    t_s = np.arange(int(duration_s * 22050)) / 22050
    samples = 0.3 * np.sin(2 * np.pi * 330.0 * t_s) + 0.02 * rng.standard_normal(t_s.size)
    return encode(samples, 22050)


@dataclass
class ScriptedUser:
    """What one scripted user did, and so which PostHog events it must produce."""

    label: str
    user_id: str = ""
    token: str = ""
    jobs: dict[str, str] = field(default_factory=dict)  # job id: final status

    EXPECTED = Counter(
        {
            "user_signed_up": 1,
            "project_created": 1,
            "file_upload_started": 3,
            "file_upload_completed": 2,
            "file_upload_failed": 1,
            "file_uploaded": 2,
            "stem_separation_started": 2,
            "stem_separation_completed": 1,
            "stem_separation_failed": 1,
        }
    )


def drive_user(client: httpx.Client, stack: Stack, label: str, seed: int) -> ScriptedUser:
    user = ScriptedUser(label)
    email = f"{SEEDS['body_email_local']}.{label}@example.com"
    response = client.post("/auth/signup", json={"email": email}, params={"password": SEEDS["query_password"]})
    assert response.status_code == 201, response.text
    user.user_id, user.token = response.json()["user_id"], response.json()["token"]
    auth = {"Authorization": f"Bearer {user.token}", "X-Api-Key": SEEDS["header_api_key"]}

    response = client.post(
        "/projects",
        json={"name": f"mix for {email}, paid with {SEEDS['body_card']}"},
        params={"token": SEEDS["query_token"]},
        headers=auth,
    )
    assert response.status_code == 201, response.text
    project_id = response.json()["project_id"]

    def upload(body: bytes, content_type: str) -> httpx.Response:
        return client.post(
            f"/projects/{project_id}/files",
            content=body,
            params={"filename": f"{label}.wav", "api_key": SEEDS["query_api_key"]},
            headers={**auth, "Content-Type": content_type},
        )

    good = upload(wav_bytes(seed), "audio/wav")
    assert good.status_code == 201, good.text
    # The 415's message repeats the media type: the seeded token lands in an exception message.
    refused = upload(wav_bytes(seed + 1), f"token={SEEDS['exception_token']}")
    assert refused.status_code == 415, refused.text
    faulty = upload(wav_bytes(seed + 2), "audio/wav")
    assert faulty.status_code == 201, faulty.text

    # A disk fault: the stored audio of the second file becomes a directory, so the worker's read fails
    # with an unexpected error (IsADirectoryError), which goes to Sentry.
    stored = stack.root / "data" / "files" / f"{faulty.json()['file_id']}.wav"
    assert stored.is_file(), f"the api stores uploads elsewhere than {stored}"
    stored.unlink()
    stored.mkdir()

    for file_id in (good.json()["file_id"], faulty.json()["file_id"]):
        response = client.post(f"/files/{file_id}/stems", headers=auth)
        assert response.status_code == 202, response.text
        user.jobs[response.json()["job_id"]] = "queued"
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline and any(status not in ("completed", "failed") for status in user.jobs.values()):
        for job_id in user.jobs:
            user.jobs[job_id] = client.get(f"/stems/{job_id}", headers=auth).json()["status"]
        time.sleep(0.1)
    assert sorted(user.jobs.values()) == ["completed", "failed"], user.jobs
    return user


def posthog_bodies(posthog: FakePostHog) -> bytes:
    bodies = []
    for request in posthog.requests:
        body = request.body
        if request.headers.get("content-encoding", "").lower() == "gzip" and body:
            body = gzip.decompress(body)
        bodies.append(body)
    return b"\n".join(bodies)


@dataclass
class Run:
    stack: Stack
    posthog: FakePostHog
    sentry: FakeSentry
    users: list[ScriptedUser]
    journeys: subprocess.CompletedProcess
    depth_at_kill: float
    final_metrics: dict[str, float]
    exit_codes: dict[str, int | None]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("stack")
    with FakePostHog() as posthog, FakeSentry() as sentry:
        stack = Stack(
            root=root,
            environ=isolated_environ(),
            collector_env={"POSTHOG_API_KEY": "phc_test", "POSTHOG_HOST": posthog.host},
            service_env={"SENTRY_DSN": sentry.dsn, "PHONOGLYPH_BILLING_SECRET": SEEDS["billing_secret"]},
        )
        try:
            stack.start()
            with httpx.Client(base_url=stack.api_url, timeout=10.0) as client:
                users = [drive_user(client, stack, "before", seed=1)]
                journeys = subprocess.run(
                    [stack.python, "-m", "services.journeys", "--base-url", stack.api_url]
                    + ["--users", "3", "--seed", "5"],
                    env=stack.journeys_env(),
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                # PostHog holds its answers: the "middle" user's events are in a delivery in flight and
                # in the outbox when the collector is killed.
                posthog.hold()
                users.append(drive_user(client, stack, "middle", seed=6))
                deadline = time.monotonic() + DRAIN_TIMEOUT_S
                while posthog.in_flight() == 0 or stack.collector_metrics().get(OUTBOX_DEPTH, 0) == 0:
                    assert time.monotonic() < deadline, "no delivery was in flight"
                    time.sleep(0.05)
                depth_at_kill = stack.collector_metrics()[OUTBOX_DEPTH]
                stack.kill_collector()
                stack.start_collector()
                posthog.release()
                users.append(drive_user(client, stack, "after", seed=11))
            # Quiet first, then stop the services (test_sigterm_flushes_the_api covers a stop with queued data).
            assert stack.wait_until_drained(DRAIN_TIMEOUT_S), "the collector's outbox did not drain"
            stack.stop_services()
            assert stack.wait_until_drained(DRAIN_TIMEOUT_S), "the collector's outbox did not drain"
            final_metrics = stack.collector_metrics()
            sentry.wait_for(lambda fake: any(fake.events) and any(fake.spans), timeout_s=10)
        finally:
            exit_codes = stack.shutdown()
        yield Run(stack, posthog, sentry, users, journeys, depth_at_kill, final_metrics, exit_codes)


def test_the_journeys_ran_and_every_process_stopped_cleanly(run):
    assert run.journeys.returncode == 0, run.journeys.stdout[-2000:] + run.journeys.stderr[-2000:]
    assert run.exit_codes.keys() == {"api", "worker", "collector"}
    assert run.stack.clean_exit(run.exit_codes), run.exit_codes
    assert processes_mentioning(str(run.stack.root)) == []


def test_every_expected_posthog_event_arrives_once_by_uuid(run):
    events = run.posthog.events
    assert events, "PostHog received nothing"
    for user in run.users:
        mine = {event["uuid"]: event for event in events if event["distinct_id"] == user.user_id}
        assert Counter(event["event"] for event in mine.values()) == ScriptedUser.EXPECTED, user.label
    uuids = run.posthog.uuids()
    # Copies of one uuid are retries (PostHog keeps one); distinct logical events never share a uuid.
    by_uuid: dict[str, set[str]] = {}
    for event in events:
        identity = json.dumps([event["event"], event["distinct_id"], event["timestamp"]])
        by_uuid.setdefault(event["uuid"], set()).add(identity)
    assert all(len(variants) == 1 for variants in by_uuid.values())
    assert len(set(uuids)) == len(by_uuid)


def test_nothing_was_dead_lettered_or_dropped_by_the_collector(run):
    assert run.final_metrics.get("phonoglyph_collector_dead_lettered_events_total", 0) == 0
    assert run.final_metrics.get("phonoglyph_collector_outbox_depth", 0) == 0


def test_kill_9_of_the_collector_loses_nothing(run):
    """The "middle" user's events were in a delivery in flight and in the outbox when the collector died."""
    assert run.depth_at_kill > 0
    middle = next(user for user in run.users if user.label == "middle")
    mine = {event["uuid"]: event["event"] for event in run.posthog.events if event["distinct_id"] == middle.user_id}
    assert Counter(mine.values()) == ScriptedUser.EXPECTED


def test_worker_errors_reach_sentry_with_trace_ids_of_spans_sentry_received(run):
    assert run.sentry.errors == []
    span_trace_ids = {span["trace_id"] for span in run.sentry.spans}
    assert span_trace_ids, "Sentry received no spans"
    errors = [
        event
        for event in run.sentry.events
        if any(value.get("type") == "IsADirectoryError" for value in event.get("exception", {}).get("values", []))
    ]
    assert len(errors) == len(run.users), [event.get("exception") for event in run.sentry.events]
    for event in errors:
        trace_id = event["contexts"]["trace"]["trace_id"]
        assert trace_id in span_trace_ids
        failed = {
            posthog_event["uuid"]
            for posthog_event in run.posthog.events
            if posthog_event["event"] == "stem_separation_failed"
            and posthog_event["properties"]["trace_id"] == trace_id
        }
        # the PostHog event of this failure, and only it, is in the same trace (by uuid: the collector
        # killed mid-delivery may send a batch twice, and PostHog keeps one row per uuid)
        assert len(failed) == 1


def test_each_request_is_its_own_trace(run):
    """No context leaks from one request into the next on a keep-alive connection (the upload route's
    `async with operation(...)` once made every later request join its trace)."""
    server_spans = [
        span
        for span in run.sentry.spans
        if span["kind"] == "SERVER" and span["resource"].get("service.name") == "phonoglyph-api"
    ]
    assert len(server_spans) > 10
    assert len({span["trace_id"] for span in server_spans}) == len(server_spans)


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_no_seeded_secret_leaves_the_processes(run, seed):
    secret = SEEDS[seed].encode()
    assert secret not in posthog_bodies(run.posthog)
    assert secret not in run.sentry.received_bytes()
    for user in run.users:
        assert user.token.encode() not in posthog_bodies(run.posthog) + run.sentry.received_bytes()


def test_make_demo_command_runs_to_exit_0(tmp_path):
    """README's main command, as `make demo` runs it (fewer users, to stay fast), with its incident."""
    result = subprocess.run(
        [sys.executable, "-m", "tools.stack", "--root", str(tmp_path / "stack"), "demo", "--users", "3"],
        cwd=ROOT,
        env=isolated_environ(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "== Funnel" in result.stdout and "Demo finished: every step worked." in result.stdout
    assert processes_mentioning(str(tmp_path)) == []
    # the incident's alert fired after the incident began and resolved
    alerts = result.stdout.split("\n== Alerts", 1)[1].split("\n== ", 1)[0].splitlines()
    header = next(i for i, line in enumerate(alerts) if "stem_separation_failing  operation=stem_separation" in line)
    fired, resolved = alerts[header + 1].split(), alerts[header + 2].split()
    assert fired[0] == "fired" and alerts[header + 1].endswith("s after the incident began"), alerts
    assert resolved[0] == "resolved" and resolved[2] == "after", alerts


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line or environment contains ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if text.encode() in (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_sigterm_flushes_the_api(tmp_path):
    """SIGTERM (docker stop, Ctrl-C of `make up`) must flush what the api has not exported yet."""
    with FakePostHog() as posthog:
        stack = Stack(
            root=tmp_path,
            environ=isolated_environ(),
            collector_env={"POSTHOG_API_KEY": "phc_test", "POSTHOG_HOST": posthog.host},
            # Nothing is exported on a timer during the test: only a flush at shutdown can deliver.
            service_env={"OTEL_BSP_SCHEDULE_DELAY": "60000", "OTEL_BLRP_SCHEDULE_DELAY": "60000"},
        )
        try:
            stack.start()
            response = httpx.post(f"{stack.api_url}/auth/signup", json={"email": "flush@example.com"}, timeout=10)
            assert response.status_code == 201
            codes = stack.stop_services()
            assert stack.wait_until_drained(DRAIN_TIMEOUT_S)
        finally:
            stack.shutdown()
        signed_up = [event for event in posthog.events if event["event"] == "user_signed_up"]
        assert [event["distinct_id"] for event in signed_up] == [response.json()["user_id"]], codes


def test_make_up_runs_until_sigterm_then_flushes_and_leaves_nothing(tmp_path):
    """`make up`: running until SIGTERM (or Ctrl-C); what the api did just before is delivered."""
    root = tmp_path / "stack"
    up = subprocess.Popen(
        [sys.executable, "-m", "tools.stack", "--root", str(root), "up"],
        cwd=ROOT,
        env=isolated_environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        for line in up.stdout:
            lines.append(line)
            if "Ctrl-C" in line or len(lines) > 50:
                break
        api_url = next(line.split()[1] for line in lines if line.strip().startswith("api "))
        response = httpx.post(f"{api_url}/auth/signup", json={"email": "up@example.com"}, timeout=10)
        assert response.status_code == 201
        up.send_signal(signal.SIGTERM)
        output = "".join(lines) + up.communicate(timeout=60)[0]
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 0, output
    assert "Stopped." in output
    assert processes_mentioning(str(root)) == []
    stored = subprocess.run(
        [sys.executable, "-m", "collector", "events", "--json"],
        env={**isolated_environ(), "COLLECTOR_DATA_DIR": str(root / "collector")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    events = [json.loads(line) for line in stored.stdout.splitlines() if line.strip()]
    assert [event["distinct_id"] for event in events if event["event"] == "user_signed_up"] == [
        response.json()["user_id"]
    ]
