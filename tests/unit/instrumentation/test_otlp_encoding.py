from __future__ import annotations

from google.protobuf.json_format import MessageToDict
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from instrumentation._internal.otlp_encoding import encode_logs_request, encode_spans_request


def _spans() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    finished: list[ReadableSpan] = []
    for service in ("api", "worker"):
        provider = TracerProvider(resource=Resource.create({"service.name": service, "n": 3}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        remote_parent = SpanContext(
            trace_id=0x0AF7651916CD43DD8448EB211C80319C,
            span_id=0xB7AD6B7169203331,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=TraceState([("vendor", "x1")]),
        )
        tracer = provider.get_tracer("scope.a", "1.0", schema_url="https://opentelemetry.io/schemas/1.21.0")
        with tracer.start_as_current_span(
            "GET /items/{id}",
            context=trace.set_span_in_context(trace.NonRecordingSpan(remote_parent)),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": "GET",
                "http.response.status_code": 200,
                "negative": -5,
                "ratio": 0.25,
                "ok": True,
                "tags": ["a", "b"],
                "numbers": [1, 2, 3],
                "ünïcode": "ümlaut ✓",
            },
            links=[Link(remote_parent, {"link.kind": "caused-by"})],
        ) as span:
            span.add_event("checkpoint", {"step": 2})
            with provider.get_tracer("scope.b").start_as_current_span("child") as child:
                child.set_status(Status(StatusCode.ERROR, "ValueError"))
                child.record_exception(ValueError("boom"))
        with tracer.start_as_current_span("root without parent", kind=SpanKind.CLIENT):
            pass
    finished.extend(exporter.get_finished_spans())
    return finished


def test_the_wire_format_matches_the_sdk_encoder() -> None:
    spans = _spans()
    ours = ExportTraceServiceRequest.FromString(encode_spans_request(spans))
    assert MessageToDict(ours) == MessageToDict(encode_spans(spans))
    assert len(ours.resource_spans) == 2
    assert sum(len(scope.spans) for rs in ours.resource_spans for scope in rs.scope_spans) == len(spans)


def test_an_empty_batch_encodes_to_an_empty_request() -> None:
    assert encode_spans_request([]) == b""


def _log_records() -> list[ReadableLogRecord]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": "api"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    events = provider.get_logger("phonoglyph.instrumentation", "2.0")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request"):
        events.emit(
            event_name="project_created",
            attributes={"phonoglyph.project.id": "p_1", "user.id": "u_1", "phonoglyph.user.guest": False},
            timestamp=1_700_000_000_000_000_000,
        )
        provider.get_logger("other").emit(
            body={"message": "hello", "count": 3},
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            attributes={"ratio": 0.5, "tags": ["a", "b"]},
        )
    events.emit(event_name="user_signed_up")  # no span, no timestamp, no attributes
    return list(exporter.get_finished_logs())


def test_log_records_match_the_sdk_encoder() -> None:
    records = _log_records()
    ours = ExportLogsServiceRequest.FromString(encode_logs_request(records))
    assert MessageToDict(ours) == MessageToDict(encode_logs(records))
    assert [r.event_name for rl in ours.resource_logs for sl in rl.scope_logs for r in sl.log_records] == [
        "project_created",
        "user_signed_up",
        "",
    ]


def test_spans_of_every_length_prefix_size_match_the_sdk_encoder() -> None:
    """A span message's length takes one byte below 128, two below 16,384, three above: each written right."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("scope")
    for size in (0, 40, 60, 100, 200, 16_250, 16_300, 16_400, 20_000):
        for kind in (SpanKind.SERVER, SpanKind.INTERNAL):
            with tracer.start_as_current_span("s", kind=kind, attributes={"pad": "x" * size} if size else None):
                pass
    spans = exporter.get_finished_spans()
    sizes = {len(span) for span in _span_messages(encode_spans(spans))}
    assert min(sizes) < 0x80 and any(0x80 <= size < 0x4000 for size in sizes) and max(sizes) >= 0x4000
    assert encode_spans_request(spans) == encode_spans(spans).SerializeToString()


def _span_messages(request: ExportTraceServiceRequest) -> list[bytes]:
    return [
        span.SerializeToString()
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
