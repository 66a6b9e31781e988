"""``python -m collector serve``: configuration errors, PostHog delivery, SIGTERM drain and resume."""

import json
import socket
import subprocess
import sys
import uuid

import httpx
import pytest

from tests.fakes.posthog import FakePostHog
from tests.integration.collector.collector_process import CollectorProcess, wait_for
from tests.unit.collector.otlp_builders import logs, record, span, traces

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("env", "config_yaml", "message"),
    [
        (
            {"COLLECTOR_AUTH_TOKEN": "two words "},
            None,
            "COLLECTOR_AUTH_TOKEN: must be printable with no surrounding whitespace",
        ),
        ({}, "limits: {max_inflight_requests: 0}\n", "limits.max_inflight_requests: must be at least 1, got 0"),
    ],
)
def test_bad_configuration_stops_with_exit_code_2(tmp_path, env, config_yaml, message):
    process = CollectorProcess(tmp_path, env=env, config_yaml=config_yaml)
    result = subprocess.run(
        [sys.executable, "-m", "collector", "serve"],
        env=process.env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"phonoglyph-collector: configuration error: {message}")
    assert result.stderr.count("\n") == 1  # one clear line, no traceback


def test_a_bad_environment_value_warns_and_the_default_is_used(tmp_path):
    process = CollectorProcess(tmp_path, env={"POSTHOG_HOST": "posthog.example"}).start()
    try:
        assert httpx.get(f"{process.url}/healthz", timeout=5).status_code == 200
        assert "exporter=local store" in process.first_line
    finally:
        process.kill()
    assert "POSTHOG_HOST: 'posthog.example' is not an http(s) URL; using the default" in process.stderr()


def test_a_port_in_use_is_a_configuration_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = CollectorProcess(tmp_path, env={"COLLECTOR_ENDPOINT": f"127.0.0.1:{port}"})
        result = subprocess.run(
            [sys.executable, "-m", "collector", "serve"],
            env=process.env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert "COLLECTOR_ENDPOINT: cannot listen on" in result.stderr


def test_an_unusable_data_dir_is_a_configuration_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    process = CollectorProcess(tmp_path, env={"COLLECTOR_DATA_DIR": str(blocker / "data")})
    result = subprocess.run(
        [sys.executable, "-m", "collector", "serve"],
        env=process.env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("phonoglyph-collector: configuration error: COLLECTOR_DATA_DIR: cannot use")
    assert result.stderr.count("\n") == 1


def _send(collector, count: int) -> list[str]:
    event_ids = [str(uuid.uuid4()) for _ in range(count)]
    body = logs(
        *(record("file_uploaded", {"phonoglyph.event.id": event_id, "user.id": "u1"}) for event_id in event_ids)
    )
    response = httpx.post(
        f"{collector.url}/v1/logs",
        content=body.SerializeToString(),
        headers={"content-type": "application/x-protobuf"},
        timeout=30,
    )
    assert response.status_code == 200
    return event_ids


def test_delivers_to_posthog_in_the_batch_wire_format(tmp_path):
    with (
        FakePostHog() as posthog,
        CollectorProcess(tmp_path, env={"POSTHOG_API_KEY": "phc_test", "POSTHOG_HOST": posthog.host}) as collector,
    ):
        assert "exporter=posthog" in collector.first_line
        event_ids = _send(collector, 3)
        request = traces(span({"phonoglyph.operation": "render", "user.id": "u1"}))
        httpx.post(
            f"{collector.url}/v1/traces",
            content=request.SerializeToString(),
            headers={"content-type": "application/x-protobuf"},
            timeout=30,
        )
        wait_for(lambda: len(set(posthog.uuids())) == 4, message="4 events at the fake PostHog")
        assert set(event_ids) < set(posthog.uuids())
        render = next(event for event in posthog.events if event["event"] == "render_completed")
        assert render["distinct_id"] == "u1" and render["properties"]["$ignore_sent_at"] is True
        wait_for(lambda: collector.metric("delivered_events_total") == 4, message="delivered counter")
        assert collector.stop() == 0


def test_sigterm_drains_and_keeps_undelivered_events_for_the_next_start(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    env = {"POSTHOG_API_KEY": "phc_test", "POSTHOG_HOST": f"http://127.0.0.1:{closed_port}"}
    collector = CollectorProcess(tmp_path, env=env, config_yaml="drain_timeout_s: 1\n").start()
    try:
        event_ids = _send(collector, 5)
    finally:
        assert collector.stop(timeout_s=20) == 0
    assert "draining" in collector.stderr()
    stats = json.loads(collector.cli("stats", "--json").stdout)
    assert stats["outbox_depth"] == 5

    with FakePostHog() as posthog:
        restarted = CollectorProcess(
            tmp_path, env={**env, "POSTHOG_HOST": posthog.host}, config_yaml="drain_timeout_s: 1\n"
        )
        with restarted:
            wait_for(lambda: set(posthog.uuids()) == set(event_ids), message="the kept events delivered after restart")
