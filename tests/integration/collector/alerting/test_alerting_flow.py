"""The alerting facade end to end: real threads, real HTTP receivers on loopback, real OTel SDK metrics."""

import time

from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from collector.alerting import build_alerting, read_alerts
from collector.metrics import Metrics
from tests.unit.collector.alerting.helpers import Clock, Receiver, outcomes

ALERTS = {
    "evaluation_interval_s": 0.05,
    "rules": [
        {
            "name": "stems_failing",
            "when": "failure_rate",
            "operation": "stem_separation",
            "window_s": 300,
            "above": 0.2,
            "min_count": 5,
            "severity": "critical",
        },
        {
            "name": "api_errors",
            "when": "http_error_rate",
            "route": "*",
            "window_s": 300,
            "above": 0.05,
            "min_count": 20,
            "severity": "critical",
        },
        {"name": "analytics_backlog", "when": "delivery_backlog", "above_s": 300, "severity": "warning"},
    ],
}


def test_a_failure_surge_notifies_every_receiver_once_across_a_restart(tmp_path):
    metrics = Metrics()
    with Receiver() as webhook, Receiver() as slack, Receiver() as alertmanager:
        urls = {"webhook_url": webhook.url, "slack_url": slack.url, "alertmanager_url": alertmanager.url}
        alerting = build_alerting(ALERTS, tmp_path, metrics=metrics, **urls)
        assert alerting is not None
        alerting.set_delivery_probe(lambda: 12.0)
        alerting.start()
        try:
            alerting.observe_events(outcomes("stem_separation", completed=2, failed=8))
            assert webhook.received.wait(10) and slack.received.wait(10) and alertmanager.received.wait(10)
            assert [a["alertname"] for a in alerting.firing()] == ["stems_failing"]
        finally:
            alerting.shutdown(10)
        assert 'phonoglyph_collector_alerts_firing{alertname="stems_failing",severity="critical"} 1' in metrics.render()
        assert 'phonoglyph_collector_alerts_firing{alertname="analytics_backlog",severity="warning"} 0' in (
            metrics.render()
        )
        firing, history = read_alerts(tmp_path)
        assert [a["alertname"] for a in firing] == ["stems_failing"]
        assert [(h["alertname"], h["status"]) for h in history] == [("stems_failing", "firing")]
        assert read_alerts(tmp_path, after_id=history[0]["id"])[1] == []  # --follow: nothing newer

        restarted = build_alerting(ALERTS, tmp_path, metrics=metrics, **urls)
        assert restarted is not None
        try:
            assert [a["alertname"] for a in restarted.firing()] == ["stems_failing"]
            for _ in range(3):
                assert restarted.evaluate_once() == []
            assert restarted.dispatcher.deliver_due() == 0
        finally:
            restarted.shutdown(10)
    assert len(webhook.bodies) == 1 and webhook.bodies[0]["alerts"][0]["labels"]["alertname"] == "stems_failing"
    assert len(slack.bodies) == 1
    assert alertmanager.paths[0] == "/api/v2/alerts"


def test_no_rules_means_no_alerting(tmp_path):
    assert build_alerting({"rules": []}, tmp_path) is None
    assert read_alerts(tmp_path) == ([], [])


def test_sdk_cumulative_request_histograms_drive_http_error_rate(tmp_path):
    clock = Clock(time.time())
    alerting = build_alerting(ALERTS, tmp_path, clock=clock)
    assert alerting is not None
    reader = InMemoryMetricReader()  # CUMULATIVE, the Python SDK's default
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": "api"}))
    histogram = provider.get_meter("test").create_histogram("http.server.request.duration", unit="s")

    def record(status: int, count: int) -> None:
        attributes = {
            "http.route": "/billing/webhook",
            "http.request.method": "POST",
            "http.response.status_code": status,
        }
        for _ in range(count):
            histogram.record(0.01, attributes)

    def export() -> None:
        data = reader.get_metrics_data()
        assert data is not None
        alerting.observe_metrics(encode_metrics(data))

    try:
        record(200, 40)
        export()
        clock.advance(10)
        assert alerting.evaluate_once() == []
        export()  # the same cumulative counts again: nothing new
        clock.advance(10)
        assert alerting.evaluate_once() == []
        record(503, 5)
        export()
        transitions = alerting.evaluate_once()
        assert [(t.rule, t.subject, t.status) for t in transitions] == [("api_errors", "/billing/webhook", "firing")]
        assert transitions[0].snapshot["value"] == 5 / 45
    finally:
        provider.shutdown()
        alerting.shutdown(5)


def test_shutdown_interrupts_a_long_evaluation_interval(tmp_path):
    alerting = build_alerting({**ALERTS, "evaluation_interval_s": 3600}, tmp_path)
    assert alerting is not None
    alerting.start()
    alerting.shutdown(10)
    assert alerting._thread is not None and not alerting._thread.is_alive()
    assert not alerting.dispatcher.running()
