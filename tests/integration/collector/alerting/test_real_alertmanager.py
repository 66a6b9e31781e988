"""The engine's pushes as a real Alertmanager sees them: same fingerprint, annotations kept, resolved once.

Needs Debian's ``prometheus-alertmanager``; skips with that message without it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.alerting.engine import rfc3339
from collector.alerting.notify import AlertmanagerNotifier, Dispatcher
from tests.unit.collector.alerting.helpers import Clock, engine_for, outcomes

RULE = {
    "name": "stems_failing",
    "when": "failure_rate",
    "operation": "stem_separation",
    "window_s": 60,
    "above": 0.2,
    "min_count": 5,
    "severity": "critical",
    "keep_firing_for_s": 0,
}


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.skip("alertmanager not found: install Debian's prometheus-alertmanager package")
    config = tmp_path / "alertmanager.yml"
    config.write_text(json.dumps({"route": {"receiver": "blackhole"}, "receivers": [{"name": "blackhole"}]}))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ready = threading.Event()
        for _ in range(300):  # bounded: about 30 s
            if process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        ready.set()
                        break
            except OSError:
                pass
            ready.wait(0.1)
        if not ready.is_set():
            pytest.fail("alertmanager did not start: " + (tmp_path / "alertmanager.log").read_text()[-2000:])
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def alerts_in(url: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as answer:
        return json.loads(answer.read())


def test_alertmanager_sees_the_engines_alert_and_its_resolution(tmp_path, alertmanager):
    clock = Clock(time.time() - 120)  # so that the resolution time, 61 s later, is in Alertmanager's past
    engine = engine_for([RULE], tmp_path, clock, notifiers=("alertmanager",))
    dispatcher = Dispatcher(engine.store, [AlertmanagerNotifier(alertmanager)], clock=clock, firing=engine.firing)
    engine.observe_events(outcomes("stem_separation", completed=1, failed=6))
    (firing,) = engine.evaluate()
    assert dispatcher.deliver_due() == 1
    (seen,) = alerts_in(alertmanager)
    assert seen["fingerprint"] == firing.snapshot["fingerprint"]
    assert seen["labels"] == firing.snapshot["labels"]
    assert seen["annotations"]["trace_ids"] == ",".join(firing.snapshot["trace_ids"])
    assert seen["annotations"]["value"] == "85.7 %"
    assert seen["startsAt"] == rfc3339(firing.snapshot["starts_at"])
    clock.advance(61)
    (resolved,) = engine.evaluate()
    assert resolved.status == "resolved" and dispatcher.deliver_due() == 1
    # a resolved alert's endsAt is the resolution time; Alertmanager lists it no longer (it is in the past)
    assert alerts_in(alertmanager) == []
