import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from collector.metrics import Metrics
from collector.pipeline import Batch, ConsumeResult, EventsProcessor, Pipeline, RetryableError
from collector.processors.mapping import MappingProcessor
from tests.unit.collector.otlp_builders import logs, record, span, traces

EVENT_ID = "0b6f4b8e-2f3a-4c1d-9e8f-7a6b5c4d3e2f"


class Observer:
    def __init__(self):
        self.seen = []

    def process(self, batch: Batch) -> None:
        self.seen.append((batch.signal, batch.request, [event["event"] for event in batch.events]))


def test_processors_run_in_order_then_delivery_and_the_counters():
    delivered, observer, metrics = [], Observer(), Metrics()
    renamed = EventsProcessor(lambda events: [event.update(event="renamed") for event in events])

    def deliver(events):
        delivered.extend(events)
        return len(events) - 1  # one was a duplicate

    pipeline = Pipeline([MappingProcessor(), renamed, observer], deliver=deliver, metrics=metrics)
    request = traces(span({"phonoglyph.operation": "render"}), span({}, span_id=b"\x02" * 8))
    request.resource_spans[0].scope_spans[0].spans.append(span({"phonoglyph.operation": "x"}, span_id=b"\0" * 8))
    result = pipeline.consume("traces", request, None)
    assert result == ConsumeResult(rejected=1, error_message="invalid trace_id or span_id")
    assert [event["event"] for event in delivered] == ["renamed"]
    assert observer.seen == [("traces", request, ["renamed"])]
    assert metrics.value("received_spans_total") == 3
    assert metrics.value("mapped_events_total") == 1
    assert metrics.value("queued_events_total") == 0
    assert metrics.value("dropped_items_total", reason="untagged_span") == 1
    assert metrics.value("dropped_items_total", reason="unmappable") == 1


def test_metrics_requests_reach_the_processors_but_not_delivery():
    observer, metrics = Observer(), Metrics()
    request = ExportMetricsServiceRequest()
    request.resource_metrics.add().scope_metrics.add().metrics.add(name="m").gauge.data_points.add(as_int=1)

    def deliver(events):
        raise AssertionError("nothing to deliver")

    assert (
        Pipeline([MappingProcessor(), observer], deliver=deliver, metrics=metrics).consume("metrics", request, None)
        == ConsumeResult()
    )
    assert observer.seen == [("metrics", request, [])]
    assert metrics.value("received_metric_points_total") == 1
    assert metrics.value("dropped_items_total", reason="metric_point") == 1


def test_a_retryable_error_from_delivery_reaches_the_caller():
    def deliver(events):
        raise RetryableError(429, "full", retry_after_s=1)

    pipeline = Pipeline([MappingProcessor()], deliver=deliver, metrics=Metrics())
    with pytest.raises(RetryableError) as info:
        pipeline.consume("logs", logs(record("file_uploaded", {"phonoglyph.event.id": EVENT_ID})), None)
    assert (info.value.status, info.value.retry_after_s) == (429, 1)


def test_retryable_errors_are_429_or_503():
    with pytest.raises(ValueError):
        RetryableError(500, "no", retry_after_s=1)
