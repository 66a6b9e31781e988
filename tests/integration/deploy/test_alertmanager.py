"""The real Alertmanager (Debian's `prometheus-alertmanager`) receives what the collector's Alertmanager
notifier (COLLECTOR_ALERTMANAGER_URL) pushes to ``POST /api/v2/alerts`` and routes it, firing and then
resolved, to a webhook receiver on loopback in the Alertmanager webhook format."""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from collector.alerting.engine import rfc3339
from collector.alerting.notify import AlertmanagerNotifier

pytestmark = pytest.mark.integration

SHIPPED_CONFIG = Path(__file__).resolve().parents[3] / "deploy" / "alertmanager.yml"
STARTUP_DEADLINE_S = 30
NOTIFICATION_DEADLINE_S = 30

LABELS = {"alertname": "stems_failing", "severity": "critical", "operation": "stem_separation"}
GENERATOR_URL = "http://collector:4318/alerts"
SUMMARY = "stems_failing (operation stem_separation): 6 of 10 failed in 300 s"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def alertmanager_binary() -> str:
    for name in ("prometheus-alertmanager", "alertmanager"):
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.skip(
        "alertmanager not found: install Debian's prometheus-alertmanager package"
        " (apt-get install prometheus-alertmanager)"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.payloads: queue.Queue[dict] = queue.Queue()
        received = self.payloads

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.put(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format, *args) -> None:  # quiet test output
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def next_payload(self) -> dict:
        try:
            return self.payloads.get(timeout=NOTIFICATION_DEADLINE_S)
        except queue.Empty:
            raise AssertionError(f"no notification within {NOTIFICATION_DEADLINE_S} s") from None


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        receiver.thread.join(timeout=10)


@contextlib.contextmanager
def running_alertmanager(config: dict, directory: Path) -> Iterator[str]:
    """A real Alertmanager with ``config`` on a free loopback port, clustering off; yields its URL."""
    binary = alertmanager_binary()
    config_file = directory / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = directory / "alertmanager.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(url, process, log_path)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: WebhookReceiver) -> Iterator[str]:
    """Routes everything to ``webhook``, grouped by alertname and severity, within about a second."""
    config = {
        "route": {
            "receiver": "webhook",
            "group_by": ["alertname", "severity"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "webhook", "webhook_configs": [{"url": webhook.url, "send_resolved": True}]}],
    }
    with running_alertmanager(config, tmp_path) as url:
        yield url


def wait_ready(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"alertmanager exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"alertmanager not ready within {STARTUP_DEADLINE_S} s:\n{log_path.read_text()}")


def collector_alert(starts_at: float, ends_at: float | None = None) -> dict:
    """An alert as the collector's engine hands it to its notifiers."""
    return {
        "alertname": LABELS["alertname"],
        "severity": LABELS["severity"],
        "status": "firing" if ends_at is None else "resolved",
        "labels": LABELS,
        "summary": SUMMARY,
        "value_text": "60 %",
        "condition": "failure rate > 20 % over 300 s (at least 5)",
        "trace_ids": [TRACE_ID],
        "links": {},
        "starts_at": starts_at,
        "ends_at": ends_at,
        "generator_url": GENERATOR_URL,
    }


def current_alerts(alertmanager_url: str) -> list[dict]:
    with urllib.request.urlopen(f"{alertmanager_url}/api/v2/alerts", timeout=10) as response:
        return json.load(response)


def test_collector_alert_reaches_the_webhook_through_alertmanager_firing_then_resolved(alertmanager, webhook):
    notifier = AlertmanagerNotifier(alertmanager)
    started = time.time() - 30
    notifier.send(collector_alert(started))

    firing = webhook.next_payload()
    assert firing["version"] == "4"
    assert firing["status"] == "firing"
    assert firing["receiver"] == "webhook"
    assert firing["groupLabels"] == {"alertname": "stems_failing", "severity": "critical"}
    (notified,) = firing["alerts"]
    assert notified["status"] == "firing"
    assert notified["labels"] == LABELS
    assert notified["annotations"]["summary"] == SUMMARY
    assert notified["annotations"]["trace_ids"] == TRACE_ID
    assert notified["generatorURL"] == GENERATOR_URL
    assert datetime.fromisoformat(notified["startsAt"]) == datetime.fromisoformat(rfc3339(started))

    # The notifier re-pushes firing alerts periodically: still one alert, and no second notification.
    notifier.push([collector_alert(started)])
    (held,) = current_alerts(alertmanager)
    assert held["labels"] == LABELS and held["status"]["state"] == "active"

    notifier.send(collector_alert(started, ends_at=time.time() - 1))
    resolved = webhook.next_payload()
    assert resolved["version"] == "4"
    assert resolved["status"] == "resolved"
    (notified,) = resolved["alerts"]
    assert notified["status"] == "resolved"
    assert notified["labels"] == LABELS
    assert datetime.fromisoformat(notified["endsAt"]) < datetime.now(UTC)


def shipped_config(webhook_url: str) -> dict:
    """deploy/alertmanager.yml with its placeholder receiver URL replaced by ``webhook_url`` and its waits
    shortened to a second; routes, grouping and inhibition as shipped."""
    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    for receiver in config["receivers"]:
        for webhook_config in receiver["webhook_configs"]:
            webhook_config["url"] = webhook_url
    for route in [config["route"], *config["route"].get("routes", [])]:
        for key in ("group_wait", "group_interval"):
            if key in route:
                route[key] = "1s"
    return config


def test_shipped_config_inhibits_the_warning_while_the_critical_of_the_same_alert_fires(tmp_path, webhook):
    backlog = {"alertname": "PhonoglyphCollectorAnalyticsBacklog", "instance": "collector:4318"}
    warning, critical = ({**backlog, "severity": severity} for severity in ("warning", "critical"))
    started = time.time() - 600

    def pushed(labels: dict, ends_at: float | None = None) -> dict:
        return {**collector_alert(started, ends_at), "labels": labels, "alertname": labels["alertname"]}

    with running_alertmanager(shipped_config(webhook.url), tmp_path) as url:
        notifier = AlertmanagerNotifier(url)
        notifier.push([pushed(warning), pushed(critical)])

        first = webhook.next_payload()
        assert first["receiver"] == "oncall"
        assert first["status"] == "firing"
        assert [alert["labels"] for alert in first["alerts"]] == [critical]
        states = {alert["labels"]["severity"]: alert["status"] for alert in current_alerts(url)}
        assert states["critical"]["state"] == "active"
        assert states["warning"]["state"] == "suppressed" and states["warning"]["inhibitedBy"]

        # The critical resolves: its resolution goes out, and the warning it held back now notifies.
        notifier.push([pushed(critical, ends_at=time.time() - 1)])
        seen = set()
        while seen != {("critical", "resolved"), ("warning", "firing")}:
            payload = webhook.next_payload()
            seen |= {(alert["labels"]["severity"], alert["status"]) for alert in payload["alerts"]}
            assert seen <= {("critical", "resolved"), ("warning", "firing")}, seen
