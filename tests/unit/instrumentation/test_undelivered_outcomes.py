"""An operation span the exporter could not deliver still leaves its outcome, as the event record an
unsampled operation would have emitted (the collector maps both to one event); the pipeline's
counters (spool drops among them) are a metric."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from instrumentation import semconv
from instrumentation._internal.batching import QueueingSpanProcessor, operation_outcome_record
from instrumentation._internal.config import QueueConfig
from instrumentation._internal.setup import PIPELINE_METRIC
from instrumentation._internal.stats import STATS
from instrumentation.testing import Captured


class _Refusing(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.FAILURE


def _finished(name: str, attributes: dict[str, object], error: bool = False) -> ReadableSpan:
    provider = TracerProvider()
    span = provider.get_tracer("t").start_span(name, attributes=attributes)  # type: ignore[arg-type]
    if error:
        span.set_status(StatusCode.ERROR)
    span.end()
    assert isinstance(span, ReadableSpan)
    return span


def test_an_operation_span_gives_its_outcome_record_with_the_span_ids() -> None:
    span = _finished("render", {semconv.OPERATION: "render", semconv.OUTCOME: "completed", "phonoglyph.render.id": "r"})
    record = operation_outcome_record(span)
    assert record is not None
    context = span.get_span_context()
    assert context is not None
    assert record.log_record.event_name == "render_completed"
    assert (record.log_record.trace_id, record.log_record.span_id) == (context.trace_id, context.span_id)
    assert record.log_record.timestamp == span.end_time
    attributes = dict(record.log_record.attributes or {})
    assert attributes["phonoglyph.render.id"] == "r"
    assert attributes[semconv.DURATION_MS] == pytest.approx(((span.end_time or 0) - (span.start_time or 0)) / 1e6)
    assert record.resource is span.resource


def test_without_an_outcome_attribute_the_status_decides() -> None:
    record = operation_outcome_record(_finished("render", {semconv.OPERATION: "render"}, error=True))
    assert record is not None and record.log_record.event_name == "render_failed"


def test_a_plain_span_gives_none() -> None:
    assert operation_outcome_record(_finished("GET /items", {"http.route": "/items"})) is None


def test_the_processor_hands_on_the_outcomes_of_an_undelivered_batch() -> None:
    STATS.reset()
    handed: list[ReadableLogRecord] = []
    processor = QueueingSpanProcessor(_Refusing(), QueueConfig(), on_undelivered=handed.extend)
    try:
        processor.on_end(_finished("render", {semconv.OPERATION: "render", semconv.OUTCOME: "failed"}))
        processor.on_end(_finished("GET /items", {}))
        processor.force_flush()
    finally:
        processor.shutdown()
    assert [record.log_record.event_name for record in handed] == ["render_failed"]
    assert STATS.snapshot()["operation_outcomes_from_undelivered_spans"] == 1
    STATS.reset()


def test_the_pipeline_counters_are_a_metric(captured: Captured) -> None:
    STATS.increment("event_records_spool_dropped", 3)
    data = captured.metric_reader.get_metrics_data()
    points = {
        point.attributes["counter"]: point.value
        for resource_metrics in (data.resource_metrics if data else ())
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == PIPELINE_METRIC
        for point in metric.data.data_points
    }
    assert points["event_records_spool_dropped"] == 3
