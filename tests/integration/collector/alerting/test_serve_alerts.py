"""Alerting inside ``phonoglyph-collector serve``: a real app's operations, over OTLP, page a webhook.

An app instrumented with ``configure()`` / ``operation()`` (a subprocess, real OTLP exporters) fails its
stem separations and leaves a render running when it is SIGKILLed. The collector, configured with rules
under ``alerts:`` and ``COLLECTOR_ALERT_WEBHOOK_URL``, notifies both incidents once, in the Alertmanager
webhook format, shows them in ``alerts --json`` and ``/metrics``, does not notify them again after a
restart, and notifies the resolution once the separations succeed again.
"""

import json
import subprocess
import sys
import time

import pytest

from tests.integration.collector.collector_process import CollectorProcess, wait_for
from tests.unit.collector.alerting.helpers import Receiver

pytestmark = pytest.mark.integration

CONFIG = """
alerts:
  evaluation_interval_s: 0.2
  rules:
    - {name: stems_failing, when: failure_rate, operation: stem_separation, window_s: 30, above: 0.5,
       min_count: 5, severity: critical, keep_firing_for_s: 0}
    - {name: render_stalled, when: stalled, operation: render, after_s: 2, severity: critical}
"""

APP = r"""
import os, sys, time
from instrumentation import configure, operation, shutdown

configure(service_name="alerting-it")
mode = sys.argv[1]
if mode == "fail":
    for _ in range(8):
        try:
            with operation("stem_separation"):
                raise RuntimeError("model weights missing")
        except RuntimeError:
            pass
elif mode == "succeed":
    for _ in range(20):
        with operation("stem_separation"):
            pass
elif mode == "hang":
    with operation("render"):
        print("started", flush=True)
        time.sleep(120)
shutdown()
print("done", flush=True)
"""


def _run_app(collector: CollectorProcess, mode: str) -> subprocess.Popen:
    env = {
        **collector.env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
    }
    return subprocess.Popen(
        [sys.executable, "-c", APP, mode], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _firing(webhook: Receiver) -> list[tuple[str, str]]:
    return [(alert["labels"]["alertname"], alert["status"]) for body in webhook.bodies for alert in body["alerts"]]


def test_serve_pages_a_failure_surge_and_a_stalled_render_once_then_their_resolution(tmp_path):
    with Receiver() as webhook:
        collector = CollectorProcess(
            tmp_path, env={"COLLECTOR_ALERT_WEBHOOK_URL": webhook.url}, config_yaml=CONFIG
        ).start()
        try:
            hang = _run_app(collector, "hang")
            assert hang.stdout.readline().strip() == "started"
            fail = _run_app(collector, "fail")
            assert fail.wait(60) == 0, fail.stderr.read()
            wait_for(
                lambda: collector.metric("queued_events_total") >= 9,
                timeout_s=30,
                message="the starts and failures queued",
            )
            hang.kill()
            hang.wait(10)

            wait_for(lambda: len(_firing(webhook)) >= 2, timeout_s=30, message="both alerts notified")
            assert sorted(_firing(webhook)) == [("render_stalled", "firing"), ("stems_failing", "firing")]
            stems = next(
                a for body in webhook.bodies for a in body["alerts"] if a["labels"]["alertname"] == "stems_failing"
            )
            assert body_shape_ok(webhook.bodies[0])
            assert stems["labels"]["severity"] == "critical"
            assert stems["labels"]["operation"] == "stem_separation"
            trace_ids = [t for t in stems["annotations"]["trace_ids"].split(",") if t]
            assert 1 <= len(trace_ids) <= 5 and all(len(t) == 32 for t in trace_ids)

            listed = json.loads(collector.cli("alerts", "--json").stdout)
            assert sorted(a["alertname"] for a in listed["firing"]) == ["render_stalled", "stems_failing"]
            assert collector.metric("alerts_firing", alertname="stems_failing", severity="critical") == 1

            # a restart keeps the firing alerts and notifies nothing new
            assert collector.stop() == 0
            collector.start()
            time.sleep(1.0)  # five evaluation intervals: a re-notification would show by now
            assert len(_firing(webhook)) == 2
            listed = json.loads(collector.cli("alerts", "--json").stdout)
            assert sorted(a["alertname"] for a in listed["firing"]) == ["render_stalled", "stems_failing"]

            succeed = _run_app(collector, "succeed")
            assert succeed.wait(60) == 0, succeed.stderr.read()
            wait_for(
                lambda: ("stems_failing", "resolved") in _firing(webhook),
                timeout_s=30,
                message="the resolution notified",
            )
            assert _firing(webhook).count(("stems_failing", "firing")) == 1
            assert _firing(webhook).count(("stems_failing", "resolved")) == 1
        finally:
            collector.stop()


def body_shape_ok(body: dict) -> bool:
    """The Alertmanager webhook fields a receiver reads."""
    alert = body["alerts"][0]
    return (
        body["version"] == "4"
        and body["status"] in ("firing", "resolved")
        and {"groupKey", "receiver", "groupLabels", "commonLabels", "commonAnnotations", "externalURL"} <= set(body)
        and {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"} <= set(alert)
        and alert["annotations"]["summary"]
    )
