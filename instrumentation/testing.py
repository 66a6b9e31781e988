"""Test helpers for any package: capture spans and event records as plain dicts; reset OTel globals.

    from instrumentation.testing import capture

    with capture(service_name="api") as captured:
        ...
    assert [e["event_name"] for e in captured.events()] == ["project_created"]

The captured data goes through the same pipeline as production (identity, scrubbing, queues);
only the exporters are in memory. OTel globals can be set once per process, so ``capture()``
resets them on entry and exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from instrumentation._internal import pipeline, setup
from instrumentation._internal.config import resolve
from instrumentation._internal.guard import reset_rate_limits
from instrumentation._internal.propagation import set_global_propagator
from instrumentation._internal.stats import STATS
from instrumentation.scrubbing import Scrubber, ScrubbingConfig

__all__ = ["Captured", "capture", "pipeline_stats", "reset_otel_globals", "span_to_dict", "event_record_to_dict"]


def reset_otel_globals() -> None:
    """Shut down what configure() installed and forget every OTel global (providers, propagator)."""
    setup.shutdown(timeout_s=2.0)
    setup.INSTALLED.clear()
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    _logs._internal._LOGGER_PROVIDER_SET_ONCE = Once()
    _logs._internal._LOGGER_PROVIDER = None
    _logs._internal._PROXY_LOGGER_PROVIDER = _logs._internal.ProxyLoggerProvider()
    metrics._internal._METER_PROVIDER_SET_ONCE = Once()
    metrics._internal._METER_PROVIDER = None
    metrics._internal._PROXY_METER_PROVIDER = metrics._internal._ProxyMeterProvider()
    set_global_propagator()
    pipeline.CURRENT[0] = pipeline.Pipeline()
    STATS.reset()
    reset_rate_limits()


def pipeline_stats() -> dict[str, int]:
    """Counters of dropped items and failed exports (``spans_dropped``, ``event_records_export_failures``...),
    and of the event-record spool: ``event_records_spooled`` (written to disk after a failed export),
    ``_spool_sent`` (sent from it), ``_spool_dropped`` (oldest dropped over its bound, or not
    writable), ``_spool_torn`` (frames skipped as torn or corrupt), ``_spool_adopted`` (taken over
    from a process that ended)."""
    return STATS.snapshot()


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None  # a finished SDK span always has one
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": trace.format_trace_id(context.trace_id),
        "span_id": trace.format_span_id(context.span_id),
        "parent_span_id": trace.format_span_id(parent.span_id) if parent else None,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": event.name, "attributes": dict(event.attributes or {})} for event in span.events],
        "resource": dict(span.resource.attributes),
        "start_time_ns": span.start_time,
        "end_time_ns": span.end_time,
    }


def event_record_to_dict(record: ReadableLogRecord) -> dict[str, Any]:
    log_record = record.log_record
    return {
        "event_name": log_record.event_name,
        "trace_id": trace.format_trace_id(log_record.trace_id) if log_record.trace_id else None,
        "span_id": trace.format_span_id(log_record.span_id) if log_record.span_id else None,
        "attributes": dict(log_record.attributes or {}),
        "body": log_record.body,
        "resource": dict(record.resource.attributes),
        "time_ns": log_record.timestamp,
    }


class Captured:
    """What the pipeline exported so far; each read flushes the queues first."""

    def __init__(self) -> None:
        self.span_exporter = InMemorySpanExporter()
        self.event_exporter = InMemoryLogRecordExporter()
        self.metric_reader = InMemoryMetricReader()

    def spans(self) -> list[dict[str, Any]]:
        setup.force_flush()
        return [span_to_dict(span) for span in self.span_exporter.get_finished_spans()]

    def events(self) -> list[dict[str, Any]]:
        setup.force_flush()
        return [event_record_to_dict(record) for record in self.event_exporter.get_finished_logs()]

    def histogram_points(self, name: str) -> list[dict[str, Any]]:
        """Points of histogram ``name``: ``{"attributes", "count", "sum"}``."""
        data = self.metric_reader.get_metrics_data()
        points = []
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        points += [
                            {"attributes": dict(p.attributes or {}), "count": p.count, "sum": p.sum}
                            for p in metric.data.data_points
                            if isinstance(p, HistogramDataPoint)
                        ]
        return points

    def clear(self) -> None:
        setup.force_flush()
        self.span_exporter.clear()
        self.event_exporter.clear()


@contextmanager
def capture(
    *,
    service_name: str | None = "test-service",
    service_version: str | None = None,
    environment: str | None = None,
    sentry_dsn: str | None = None,
    scrubbing: ScrubbingConfig | None = None,
) -> Iterator[Captured]:
    """Install the pipeline with in-memory exporters for the block; reset OTel globals around it."""
    reset_otel_globals()
    captured = Captured()
    settings = resolve(
        service_name=service_name,
        service_version=service_version,
        environment=environment,
        otlp_endpoint=None,
        sentry_dsn=sentry_dsn,
    )
    setup.install(
        settings,
        Scrubber(scrubbing or ScrubbingConfig.from_env()),
        setup.Exporters(
            spans=captured.span_exporter,
            event_records=captured.event_exporter,
            metric_reader=captured.metric_reader,
        ),
    )
    try:
        yield captured
    finally:
        reset_otel_globals()
