from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from instrumentation._internal import exporters
from instrumentation._internal.exporters import OtlpHttpLogRecordExporter, OtlpHttpSpanExporter
from tests.fakes.otlp import OtlpCapture, otlp_capture_server


@pytest.fixture
def otlp() -> Iterator[tuple[str, OtlpCapture]]:
    with otlp_capture_server() as server:
        yield server


def _finished_spans(count: int) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    for index in range(count):
        with tracer.start_as_current_span(f"span {index}", attributes={"index": index}):
            pass
    return list(memory.get_finished_spans())


def test_a_batch_larger_than_one_encoding_chunk_arrives_whole_in_one_request(
    otlp: tuple[str, OtlpCapture], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, capture = otlp
    monkeypatch.setattr(exporters, "ENCODE_CHUNK_ITEMS", 4)
    exporter = OtlpHttpSpanExporter(endpoint=f"{endpoint}/v1/traces")
    assert exporter.export(_finished_spans(10)) is SpanExportResult.SUCCESS
    exporter.shutdown()
    data = capture.snapshot()
    assert len(data["requests"]) == 1
    assert sorted(span["attributes"]["index"] for span in data["spans"]) == list(range(10))


def test_a_rejected_export_is_a_failure(otlp: tuple[str, OtlpCapture]) -> None:
    endpoint, _ = otlp
    exporter = OtlpHttpSpanExporter(endpoint=f"{endpoint}/v1/unknown", timeout=2)
    assert exporter.export(_finished_spans(1)) is SpanExportResult.FAILURE
    exporter.shutdown()


def test_event_records_arrive_with_their_event_name_and_ids(
    otlp: tuple[str, OtlpCapture], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, capture = otlp
    monkeypatch.setattr(exporters, "ENCODE_CHUNK_ITEMS", 2)
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        for index in range(5):
            provider.get_logger("events").emit(event_name="project_created", attributes={"index": index})
    exporter = OtlpHttpLogRecordExporter(endpoint=f"{endpoint}/v1/logs")
    assert exporter.export(list(memory.get_finished_logs())) is LogRecordExportResult.SUCCESS
    exporter.shutdown()
    records = capture.snapshot()["log_records"]
    assert sorted(record["attributes"]["index"] for record in records) == list(range(5))
    assert {record["event_name"] for record in records} == {"project_created"}
    assert {record["span_id"] for record in records} == {f"{span.get_span_context().span_id:016x}"}


def test_prepare_runs_on_every_span_before_encoding(
    otlp: tuple[str, OtlpCapture], monkeypatch: pytest.MonkeyPatch
) -> None:
    from instrumentation._internal.otel_scrubbing import scrub_span
    from instrumentation.scrubbing import Scrubber

    endpoint, capture = otlp
    monkeypatch.setattr(exporters, "ENCODE_CHUNK_ITEMS", 3)
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for index in range(7):
        with provider.get_tracer("test").start_as_current_span("login", attributes={"password": f"hunter{index}"}):
            pass
    scrubber = Scrubber()
    exporter = OtlpHttpSpanExporter(endpoint=f"{endpoint}/v1/traces", prepare=lambda span: scrub_span(span, scrubber))
    assert exporter.export(list(memory.get_finished_spans())) is SpanExportResult.SUCCESS
    exporter.shutdown()
    spans = capture.snapshot()["spans"]
    assert len(spans) == 7
    assert "hunter" not in repr(spans)
