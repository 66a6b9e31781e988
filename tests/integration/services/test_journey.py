"""A whole user journey against the api and the worker as real processes, exporting OTLP to a
capture server: the expected events in order, one distinct id and session across both processes,
one trace per request (the worker's spans join the trace of the request that queued their job)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from instrumentation import semconv
from services.billing import SIGNATURE_HEADER, sign
from tests.fakes.otlp import OtlpCapture, otlp_capture_server
from tests.integration.services.conftest import BILLING_SECRET, wav_body

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[3]
STARTUP_TIMEOUT_S = 30.0
JOB_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # both flush their telemetry on SIGTERM
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)
    return process.returncode


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, OtlpCapture]]:
    """api and worker as subprocesses (shared by this module's tests); on teardown both must stop
    cleanly on SIGTERM (exit 0: they flush their telemetry)."""
    tmp_path = tmp_path_factory.mktemp("stack")
    with otlp_capture_server() as (endpoint, capture):
        env = {
            **os.environ,
            "PHONOGLYPH_DB": str(tmp_path / "phonoglyph.db"),
            "PHONOGLYPH_DATA_DIR": str(tmp_path / "data"),
            "PHONOGLYPH_BILLING_SECRET": BILLING_SECRET,
            "PHONOGLYPH_WORKER_POLL_INTERVAL_S": "0.05",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_BLRP_SCHEDULE_DELAY": "200",
            "SENTRY_DSN": "",
        }
        port = _free_port()
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for name, args in (
                ("api", ["-m", "services.api", "--port", str(port)]),
                ("worker", ["-m", "services.worker"]),
            ):
                log = (tmp_path / f"{name}.log").open("wb")
                processes[name] = subprocess.Popen(
                    [sys.executable, *args], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                )
            base_url = f"http://127.0.0.1:{port}"
            deadline_s = time.monotonic() + STARTUP_TIMEOUT_S
            while True:
                assert processes["api"].poll() is None, (tmp_path / "api.log").read_text()
                try:
                    if httpx.get(base_url + "/health", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline_s, "the api did not become healthy"
                time.sleep(0.05)
            yield base_url, capture
        finally:
            codes = {name: _stop(process) for name, process in processes.items()}
            logs = {name: (tmp_path / f"{name}.log").read_text() for name in processes}
            assert codes == {"api": 0, "worker": 0}, logs


def _wait_for_job(client: httpx.Client, path: str, headers: dict[str, str]) -> dict[str, Any]:
    deadline_s = time.monotonic() + JOB_TIMEOUT_S
    while True:
        job = client.get(path, headers=headers).json()
        if job["status"] in ("completed", "failed") or time.monotonic() > deadline_s:
            return job
        time.sleep(0.05)


def _posthog_like(capture: OtlpCapture) -> list[tuple[int, str, dict[str, Any], str, str]]:
    """(time, event, attributes, trace id, service) as the collector would derive them: every
    event record, and X_completed / X_failed for each span tagged phonoglyph.operation.
    Reads the capture's lists directly: callable inside ``capture.wait_for`` (which holds its lock)."""
    snapshot = {"log_records": list(capture.log_records), "spans": list(capture.spans)}
    derived = [
        (
            record["time_ns"],
            record["event_name"],
            record["attributes"],
            record["trace_id"],
            record["resource"]["service.name"],
        )
        for record in snapshot["log_records"]
        if record["event_name"]
    ]
    derived += [
        (
            span["end_time_ns"],
            f"{span['attributes'][semconv.OPERATION]}_{span['attributes'][semconv.OUTCOME]}",
            span["attributes"],
            span["trace_id"],
            span["resource"]["service.name"],
        )
        for span in snapshot["spans"]
        if semconv.OPERATION in span["attributes"]
    ]
    return sorted(derived, key=lambda item: item[0])


EXPECTED_EVENTS = [
    ("project_created", "phonoglyph-api"),
    ("user_signed_up", "phonoglyph-api"),
    ("file_upload_started", "phonoglyph-api"),
    ("file_uploaded", "phonoglyph-api"),
    ("file_upload_completed", "phonoglyph-api"),
    ("stem_separation_started", "phonoglyph-worker"),
    ("stem_separation_completed", "phonoglyph-worker"),
    ("audio_analysis_started", "phonoglyph-worker"),
    ("audio_analysis_completed", "phonoglyph-worker"),
    ("render_started", "phonoglyph-api"),  # the product event (credits spent) is the render's one start
    ("render_completed", "phonoglyph-worker"),
    ("credits_purchased", "phonoglyph-api"),
]


def test_a_user_journey_across_api_and_worker(stack: tuple[str, OtlpCapture]) -> None:
    base_url, capture = stack
    with httpx.Client(base_url=base_url, timeout=10.0) as client:
        guest = client.post("/auth/guest").json()
        headers = {"X-Guest-Session": guest["guest_token"]}
        project_id = client.post("/projects", json={"name": "journey"}, headers=headers).json()["project_id"]
        member = client.post("/auth/signup", json={"email": "journey@example.test"}, headers=headers).json()
        headers = {"Authorization": f"Bearer {member['token']}"}
        upload = client.post(
            f"/projects/{project_id}/files", content=wav_body(3.0), headers={**headers, "Content-Type": "audio/wav"}
        )
        assert upload.status_code == 201
        file_id = upload.json()["file_id"]
        queued = {}
        for operation, path, status_path in [
            ("stem_separation", f"/files/{file_id}/stems", "/stems/{}"),
            ("audio_analysis", f"/files/{file_id}/analysis", "/analysis/{}"),
            ("render", f"/files/{file_id}/renders", "/renders/{}"),
        ]:
            job_id = client.post(path, headers=headers).json()["job_id"]
            assert _wait_for_job(client, status_path.format(job_id), headers)["status"] == "completed"
            queued[operation] = path
        purchase = json.dumps(
            {
                "id": "evt_journey",
                "type": "credits.purchased",
                "data": {
                    "user_id": member["user_id"],
                    "session_id": member["session_id"],
                    "credits": 20,
                    "amount_cents": 999,
                    "currency": "EUR",
                },
            }
        ).encode()
        credited = client.post(
            "/billing/webhook", content=purchase, headers={SIGNATURE_HEADER: sign(purchase, BILLING_SECRET)}
        )
        assert credited.json()["status"] == "credited"
    assert guest["user_id"] == member["user_id"] and guest["session_id"] == member["session_id"]

    def mine(capture: OtlpCapture) -> list[tuple[int, str, dict[str, Any], str, str]]:
        return [event for event in _posthog_like(capture) if event[2].get(semconv.USER_ID) == member["user_id"]]

    assert capture.wait_for(lambda capture: len(mine(capture)) >= len(EXPECTED_EVENTS), timeout_s=20)
    assert capture.snapshot()["errors"] == []
    events, all_events = mine(capture), _posthog_like(capture)
    assert [(event, service) for _t, event, _a, _trace, service in events] == EXPECTED_EVENTS

    # one person, one session, in both processes: every record of this journey's traces carries them
    journey_traces = {trace_id for _t, _e, _a, trace_id, _s in events}
    everything = [event for event in all_events if event[3] in journey_traces]
    assert len(everything) == len(EXPECTED_EVENTS)
    assert {attributes[semconv.USER_ID] for _t, _e, attributes, _trace, _s in events} == {member["user_id"]}
    assert {attributes[semconv.SESSION_ID] for _t, _e, attributes, _trace, _s in events} == {member["session_id"]}

    # one trace per request; the worker's operation is a child of the request that queued it
    def server_span_traces(capture: OtlpCapture) -> set[str]:
        return {span["trace_id"] for span in capture.spans if span["kind"] == "SERVER"}

    assert capture.wait_for(lambda capture: journey_traces <= server_span_traces(capture), timeout_s=20)
    server_spans = [span for span in capture.snapshot()["spans"] if span["kind"] == "SERVER"]
    traces = [span["trace_id"] for span in server_spans]
    assert len(traces) == len(set(traces))
    # no request inherits another's context (uvicorn's reset_contextvars: the upload body pauses reading)
    assert [span["parent_span_id"] for span in server_spans] == [None] * len(server_spans)
    request_of_trace = {span["trace_id"]: span for span in server_spans}
    for _t, event, _attributes, trace_id, service in events:
        assert trace_id in request_of_trace, (event, service)
    worker_spans = [
        span
        for span in capture.snapshot()["spans"]
        if span["resource"]["service.name"] == "phonoglyph-worker" and span["trace_id"] in journey_traces
    ]
    assert sorted(span["attributes"][semconv.OPERATION] for span in worker_spans) == sorted(queued)
    for span in worker_spans:
        request = request_of_trace[span["trace_id"]]
        assert request["attributes"]["url.path"] == queued[span["attributes"][semconv.OPERATION]]
        assert span["parent_span_id"] == request["span_id"]


def test_the_journeys_cli_drives_the_stack(stack: tuple[str, OtlpCapture]) -> None:
    base_url, capture = stack
    users = 6
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.journeys",
            "--base-url",
            base_url,
            "--users",
            str(users),
            "--seed",
            "4",
            "--deadline-s",
            "60",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PHONOGLYPH_BILLING_SECRET": BILLING_SECRET},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:users]] == [["user", str(index)] for index in range(users)]
    summary = dict(item.split("=") for item in lines[-1].removeprefix("summary: ").split(", "))
    assert summary["problems"] == "0"
    assert int(summary["uploads.accepted"]) == users
    assert int(summary["stems.completed"]) == int(summary["analysis.completed"]) == users
    assert int(summary["render.completed"]) == int(summary["renders.started"])

    user_ids = {line.split()[2] for line in lines[:users]}

    def names(capture: OtlpCapture) -> list[str]:
        return [r["event_name"] for r in capture.log_records if r["attributes"].get(semconv.USER_ID) in user_ids]

    assert capture.wait_for(lambda capture: names(capture).count("file_uploaded") >= users, timeout_s=20)
    assert capture.wait_for(
        lambda capture: names(capture).count("credits_purchased") >= int(summary.get("purchases", 0)), timeout_s=20
    )
    names = names(capture)
    assert names.count("file_uploaded") == users
    assert names.count("user_signed_up") == int(summary["signups"])
    assert names.count("credits_purchased") == int(summary.get("purchases", 0))
