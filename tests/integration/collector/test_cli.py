"""``phonoglyph-collector events | funnel | stats | dead-letters`` against a running collector's data dir."""

import json
import uuid

import httpx
import pytest

from collector.delivery.outbox import Outbox
from tests.integration.collector.collector_process import CollectorProcess, wait_for
from tests.unit.collector.otlp_builders import T0, logs, record

pytestmark = pytest.mark.integration

SECOND = 1_000_000_000
JOURNEYS = {
    "u1": [("project_created", 0), ("file_uploaded", 1), ("render_started", 2)],
    "u2": [("project_created", 0), ("file_uploaded", 1)],
    "u3": [("file_uploaded", 0), ("project_created", 1)],  # wrong order: only the first step
    "u4": [("project_created", 0), ("render_started", 1)],  # skipped a step
}


def send(collector, *records) -> None:
    response = httpx.post(
        f"{collector.url}/v1/logs",
        content=logs(*records).SerializeToString(),
        headers={"content-type": "application/x-protobuf"},
        timeout=30,
    )
    assert response.status_code == 200, response.content


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    process = CollectorProcess(tmp_path_factory.mktemp("cli"), config_yaml="drain_timeout_s: 2\n")
    with process:
        send(
            process,
            *(
                record(name, {"phonoglyph.event.id": str(uuid.uuid4()), "user.id": user}, time=T0 + offset * SECOND)
                for user, steps in JOURNEYS.items()
                for name, offset in steps
            ),
        )
        wait_for(lambda: len(json_lines(process.cli("events", "--json").stdout)) == 9, message="9 stored events")
        yield process


def test_events_json_and_filter(collector):
    events = json_lines(collector.cli("events", "--json").stdout)
    assert {(event["distinct_id"], event["event"]) for event in events} == {
        (user, name) for user, steps in JOURNEYS.items() for name, _ in steps
    }
    assert all(set(event) == {"uuid", "event", "distinct_id", "timestamp", "properties"} for event in events)
    renders = json_lines(collector.cli("events", "--json", "--event", "render_started").stdout)
    assert sorted(event["distinct_id"] for event in renders) == ["u1", "u4"]
    text = collector.cli("events", "--event", "render_started").stdout.splitlines()
    assert len(text) == 2 and all("render_started" in line for line in text)


def test_funnel_counts_distinct_ids_in_order(collector):
    result = collector.cli("funnel", "project_created", "file_uploaded", "render_started", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"event": "project_created", "count": 4, "conversion_from_first": 1.0, "conversion_from_previous": 1.0},
        {"event": "file_uploaded", "count": 2, "conversion_from_first": 0.5, "conversion_from_previous": 0.5},
        {"event": "render_started", "count": 1, "conversion_from_first": 0.25, "conversion_from_previous": 0.5},
    ]
    table = collector.cli("funnel", "project_created", "file_uploaded", "render_started").stdout
    assert "3. render_started" in table and "25.0%" in table


def test_stats(collector):
    stats = json.loads(collector.cli("stats", "--json").stdout)
    assert stats["events"] == {"file_uploaded": 3, "project_created": 4, "render_started": 2}
    assert stats["outbox_depth"] == 0 and stats["dead_letters"] == 0


def test_follow_prints_new_events(collector):
    import subprocess
    import sys

    follower = subprocess.Popen(
        [sys.executable, "-m", "collector", "events", "--follow", "--json", "--event", "credits_purchased"],
        env=collector.env,
        cwd=collector.workdir,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        event_id = str(uuid.uuid4())
        send(collector, record("credits_purchased", {"phonoglyph.event.id": event_id, "user.id": "u9"}))
        line = follower.stdout.readline()  # blocks until the follower prints; the fixture's timeout bounds it
        assert json.loads(line)["uuid"] == event_id
    finally:
        follower.terminate()
        follower.wait(10)


def test_dead_letters_list_and_replay(collector):
    # The mapping bounds what an event can hold, so input no longer makes a dead letter here: one is
    # written the way the worker writes one PostHog refused.
    event_id = str(uuid.uuid4())
    event = {
        "event": "file_uploaded",
        "distinct_id": "big",
        "properties": {"$ignore_sent_at": True},
        "timestamp": "2025-11-28T03:20:00.000000Z",
        "uuid": event_id,
    }
    outbox = Outbox(collector.data_dir / "outbox.db", recover_in_flight=False)
    try:
        assert outbox.dead_letter([event], reason="rejected by PostHog: 400") == 1
    finally:
        outbox.close()
    letters = wait_for(
        lambda: json_lines(collector.cli("dead-letters", "list", "--json").stdout), message="a dead letter"
    )
    assert [letter["uuid"] for letter in letters] == [event_id]
    assert letters[0]["reason"]
    assert "file_uploaded" in collector.cli("dead-letters", "list").stdout
    replay = collector.cli("dead-letters", "replay", event_id)
    assert replay.returncode == 0 and replay.stdout.startswith("1 dead letters returned")


@pytest.mark.parametrize(
    "args",
    [("events",), ("events", "--follow"), ("funnel", "a", "b"), ("dead-letters", "list"), ("stats",)],
)
def test_a_reader_on_a_missing_store_says_so_and_creates_nothing(tmp_path, args):
    import os
    import subprocess
    import sys

    data_dir = tmp_path / "nowhere"  # a typo in COLLECTOR_DATA_DIR, or no collector ever ran here
    env = {**os.environ, "COLLECTOR_DATA_DIR": str(data_dir)}
    env.pop("POSTHOG_API_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "collector", *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert str(data_dir) in result.stderr and "no " in result.stderr
    assert "has `phonoglyph-collector serve` run" in result.stderr
    assert not data_dir.exists()


def test_a_corrupt_dead_letter_is_listed(collector):
    outbox = Outbox(collector.data_dir / "outbox.db", recover_in_flight=False)
    try:
        assert outbox.dead_letter([{"event": "x", "distinct_id": "d", "uuid": "corrupt-1"}], reason="test") == 1
    finally:
        outbox.close()
    import sqlite3

    other = sqlite3.connect(collector.data_dir / "outbox.db", isolation_level=None)
    try:
        other.execute("UPDATE dead_letters SET payload = X'7b2280ff' WHERE uuid = 'corrupt-1'")
    finally:
        other.close()
    listed = collector.cli("dead-letters", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (letter,) = [letter for letter in json_lines(listed.stdout) if letter["uuid"] == "corrupt-1"]
    assert letter["payload"]["corrupt_payload"].startswith('{"')
    replay = collector.cli("dead-letters", "replay", "corrupt-1")
    assert replay.returncode == 0
    # back in the outbox of a running collector, its claim moves it aside again and delivery goes on
    wait_for(lambda: collector.metric("dead_lettered_events_total", reason="corrupt") == 1, message="moved aside")
    wait_for(lambda: collector.metric("dead_letters") >= 1, message="the dead-letter gauge")
    send(collector, record("after_corrupt", {"phonoglyph.event.id": str(uuid.uuid4()), "user.id": "u9"}))
    wait_for(lambda: json_lines(collector.cli("events", "--json", "--event", "after_corrupt").stdout), message="sent")
    stats = json.loads(collector.cli("stats", "--json").stdout)
    assert stats["outbox_depth"] == 0 and stats["dead_letters"] >= 1
