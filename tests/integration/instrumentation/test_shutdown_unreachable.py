"""shutdown() with Sentry (or the collector) unreachable: one attempt per queued batch or event, no
retry waits and no warning per retry; event records for the collector stay in the spool."""

from __future__ import annotations

import logging
import socket

import pytest
import sentry_sdk

from instrumentation import configure, operation, shutdown, track
from instrumentation.testing import pipeline_stats
from tests.fakes.otlp import OtlpCapture

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _retry_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if "Retrying (Retry(" in record.getMessage() or "Transient error" in record.getMessage()
    ]


def test_shutdown_with_sentry_unreachable_tries_once_without_retry_warnings(
    otlp: tuple[str, OtlpCapture], fresh_otel: None, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint, capture = otlp
    configure(service_name="api", otlp_endpoint=endpoint, sentry_dsn=f"http://public@127.0.0.1:{_closed_port()}/1")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            with operation("render"):
                track("project_created")
            try:
                raise RuntimeError("the job store is gone")
            except RuntimeError:
                sentry_sdk.capture_exception()
        shutdown()
    assert not sentry_sdk.get_client().is_active()
    assert _retry_lines(caplog) == []
    sentry_span_lines = [r for r in caplog.records if r.name.endswith("trace_exporter")]
    assert len(sentry_span_lines) <= 1  # one line for the failed span export to Sentry, rate-limited
    assert len([r for r in capture.snapshot()["log_records"] if r["event_name"] == "project_created"]) == 3


def test_shutdown_with_the_collector_and_sentry_unreachable_keeps_the_event_records_on_disk(
    fresh_otel: None, caplog: pytest.LogCaptureFixture
) -> None:
    port = _closed_port()
    configure(
        service_name="api", otlp_endpoint=f"http://127.0.0.1:{port}", sentry_dsn=f"http://public@127.0.0.1:{port}/1"
    )
    with caplog.at_level(logging.WARNING):
        with operation("render"):
            track("project_created")
        shutdown()
    assert _retry_lines(caplog) == []
    stats = pipeline_stats()
    # the event, render_started, and the outcome the undelivered span carried
    assert stats["event_records_spooled"] == 3 and "event_records_lost" not in stats
