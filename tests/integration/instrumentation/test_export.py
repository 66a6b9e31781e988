"""OTLP/HTTP export of spans, event records and metrics to a real server, and behaviour under trouble."""

from __future__ import annotations

import logging
import socket

import pytest

from instrumentation import configure, operation, semconv, shutdown, track
from instrumentation._internal.setup import force_flush
from instrumentation.testing import pipeline_stats
from tests.fakes.otlp import OtlpCapture

pytestmark = pytest.mark.integration


def test_all_three_signals_reach_the_collector_with_the_resource(
    otlp: tuple[str, OtlpCapture], fresh_otel: None
) -> None:
    endpoint, capture = otlp
    configure(service_name="api", service_version="1.4.0", environment="test", otlp_endpoint=endpoint)
    configure(service_name="ignored: configure is idempotent", otlp_endpoint="http://127.0.0.1:9")
    with operation("render", {semconv.RENDER_ID: "r_1"}):
        track("project_created", {semconv.PROJECT_ID: "p_1"})
    shutdown()
    shutdown()  # a second shutdown is harmless

    data = capture.snapshot()
    assert data["errors"] == []
    [span] = data["spans"]
    assert span["resource"][semconv.SERVICE_NAME] == "api"
    assert span["resource"][semconv.SERVICE_VERSION] == "1.4.0"
    assert span["resource"][semconv.DEPLOYMENT_ENVIRONMENT] == "test"
    assert span["attributes"][semconv.OUTCOME] == "completed"
    assert sorted(r["event_name"] for r in data["log_records"]) == ["project_created", "render_started"]
    durations = [p for p in data["metric_points"] if p["name"] == "phonoglyph.operation.duration"]
    assert [(p["unit"], p["count"], p["attributes"]) for p in durations] == [
        ("s", 1, {semconv.OPERATION: "render", semconv.OUTCOME: "completed"})
    ]
    assert {r["content_type"] for r in data["requests"]} == {"application/x-protobuf"}


def test_a_503_with_retry_after_is_retried_and_nothing_is_lost(otlp: tuple[str, OtlpCapture], fresh_otel: None) -> None:
    endpoint, capture = otlp
    capture.answer_unavailable(times=2, retry_after_s=0)
    configure(service_name="api", otlp_endpoint=endpoint)
    for index in range(5):
        track("project_created", {semconv.PROJECT_ID: f"p_{index}"})
    shutdown()
    data = capture.snapshot()
    assert sorted(r["attributes"][semconv.PROJECT_ID] for r in data["log_records"]) == [f"p_{i}" for i in range(5)]
    stats = pipeline_stats()  # retried from the spool: spooled and sent, nothing lost or dropped
    assert stats.get("event_records_spooled", 0) == stats.get("event_records_spool_sent", 0)
    assert not {name: count for name, count in stats.items() if name.endswith(("_lost", "_dropped"))}


def test_an_unreachable_collector_changes_nothing_for_the_app_but_counters_and_a_rate_limited_log(
    fresh_otel: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv("OTEL_BSP_EXPORT_TIMEOUT", "300")
    monkeypatch.setenv("OTEL_BLRP_EXPORT_TIMEOUT", "300")
    configure(service_name="api", otlp_endpoint=f"http://127.0.0.1:{closed_port}")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            with operation("render"):
                track("project_created")
            force_flush()
        shutdown()
    stats = pipeline_stats()
    assert stats["spans_export_failures"] == 3 and stats["spans_lost"] == 3
    # event records wait in the spool for the next process (tried once, then from the spool), with
    # the outcomes of the operations whose spans were not delivered
    assert stats["event_records_spooled"] == 9 and "event_records_lost" not in stats
    assert stats["log_lines_suppressed"] >= 1
    span_export_lines = [
        r for r in caplog.records if r.name.endswith("trace_exporter") or r.getMessage().startswith("exporting spans")
    ]
    assert len(span_export_lines) == 1


def test_a_malformed_queue_setting_leaves_configure_on_with_the_default(
    otlp: tuple[str, OtlpCapture], fresh_otel: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint, capture = otlp
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "abc")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "-5")
    with caplog.at_level(logging.WARNING, logger="instrumentation"):
        configure(service_name="api", otlp_endpoint=endpoint)
    with operation("render"):
        pass
    shutdown()
    assert [span["name"] for span in capture.snapshot()["spans"]] == ["render"]
    warned = " ".join(record.getMessage() for record in caplog.records)
    assert "OTEL_BSP_SCHEDULE_DELAY" in warned and "OTEL_BSP_MAX_QUEUE_SIZE" in warned
