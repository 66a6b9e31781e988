from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from instrumentation import semconv
from instrumentation._internal.batching import QueueingSpanProcessor
from instrumentation._internal.config import QueueConfig
from instrumentation._internal.identity import IdentitySpanProcessor
from instrumentation._internal.lean_span import MAX_ATTRIBUTES, LeanSpan, LeanSpans
from instrumentation._internal.otlp_encoding import encode_spans_request

REMOTE_PARENT = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0xB7AD6B7169203331,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "x1")]),
)


class Collected(SpanProcessor):
    """A QueueingSpanProcessor stand-in of the sink type: records what reaches the export queue."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []
        self.put_span = self.spans.append

    def on_end(self, span: ReadableSpan) -> None:
        if span.context.trace_flags.sampled:
            self.spans.append(span)


def _lean(sampler: Any = None) -> tuple[TracerProvider, LeanSpans, Collected]:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "api"}), **({"sampler": sampler} if sampler else {})
    )
    collected = Collected()
    provider.add_span_processor(IdentitySpanProcessor())
    provider.add_span_processor(collected)
    return provider, LeanSpans(provider, provider.get_tracer("scope.a", "1.0"), (Collected,)), collected


def _request(spans: list[ReadableSpan]) -> dict[str, Any]:
    return MessageToDict(ExportTraceServiceRequest.FromString(encode_spans_request(spans)))


def _server_span(start: Any, parent: Context) -> Any:
    span = start("GET", parent, SpanKind.SERVER, {"url.path": "/items/7", "server.port": 8000})
    span.set_attribute("http.route", "/items/{id}")
    span.set_attribute("tags", ["a", "b"])
    span.update_name("GET /items/{id}")
    span.add_event("cache.miss", {"key": "items:7"}, timestamp=1_700_000_000_000_000_000)
    span.set_status(Status(StatusCode.ERROR, "ValueError"))
    span.end(end_time=span.start_time + 1500)
    return span


def test_a_lean_span_is_exported_as_the_sdk_span_with_the_same_fields() -> None:
    provider, lean, collected = _lean()
    parent = trace.set_span_in_context(trace.NonRecordingSpan(REMOTE_PARENT))
    lean_span = _server_span(lean.start, parent)
    assert isinstance(lean_span, LeanSpan) and collected.spans == [lean_span]

    sdk_exporter = InMemorySpanExporter()
    sdk_provider = TracerProvider(resource=provider.resource)
    sdk_provider.add_span_processor(SimpleSpanProcessor(sdk_exporter))
    tracer = sdk_provider.get_tracer("scope.a", "1.0")

    def sdk_start(name: str, ctx: Context, kind: SpanKind, attributes: dict[str, Any]) -> Any:
        span = tracer.start_span(name, context=ctx, kind=kind, attributes=attributes, start_time=lean_span.start_time)
        return span

    _server_span(sdk_start, parent)
    (sdk_span,) = sdk_exporter.get_finished_spans()
    expected = MessageToDict(encode_spans([sdk_span]))
    got = _request([lean_span])
    for body in (expected, got):  # ids differ (random)
        span = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        assert span.pop("spanId")
    assert got == expected
    assert got["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"]  # the caller's trace
    assert lean_span.get_span_context().trace_id == REMOTE_PARENT.trace_id
    assert lean_span.parent == REMOTE_PARENT and lean_span.context.trace_state == REMOTE_PARENT.trace_state


def test_children_and_the_current_span_see_the_lean_span() -> None:
    provider, lean, collected = _lean()
    span = lean.start("GET", Context(), SpanKind.SERVER, {})
    with trace.use_span(span, end_on_exit=True):
        with provider.get_tracer("child").start_as_current_span("db.query") as child:
            assert trace.get_current_span() is child
        assert trace.get_current_span() is span
    child_span, server_span = collected.spans
    assert child_span.parent is not None
    assert child_span.parent.span_id == server_span.context.span_id
    assert child_span.context.trace_id == server_span.context.trace_id
    assert not span.is_recording()


def test_the_providers_sampler_decides() -> None:
    _, lean, collected = _lean(ParentBased(TraceIdRatioBased(0.0)))
    span = lean.start("GET", Context(), SpanKind.SERVER, {})
    assert not span.is_recording() and not span.get_span_context().trace_flags.sampled
    span.end()
    assert collected.spans == []

    unsampled_parent = SpanContext(REMOTE_PARENT.trace_id, REMOTE_PARENT.span_id, True, TraceFlags(0))
    _, lean, collected = _lean()
    span = lean.start("GET", trace.set_span_in_context(trace.NonRecordingSpan(unsampled_parent)), SpanKind.SERVER, {})
    assert not span.is_recording() and span.get_span_context().trace_id == REMOTE_PARENT.trace_id


def test_identity_baggage_is_copied_when_the_span_starts() -> None:
    _, lean, collected = _lean()
    ctx = baggage.set_baggage(semconv.USER_ID, "u_42", baggage.set_baggage(semconv.USER_GUEST, "true"))
    lean.start("GET", ctx, SpanKind.SERVER, {}).end()
    (span,) = collected.spans
    assert span.attributes[semconv.USER_ID] == "u_42" and span.attributes[semconv.USER_GUEST] is True


def test_attribute_rules_are_the_sdks() -> None:
    _, lean, _ = _lean()
    span = lean.start("GET", Context(), SpanKind.SERVER, {})
    span.set_attribute("", "dropped")
    span.set_attribute("list", [1, 2])
    for index in range(MAX_ATTRIBUTES + 5):
        span.set_attribute(f"k{index}", index)
    span.set_status(StatusCode.OK)
    span.set_status(Status(StatusCode.ERROR, "later"))  # OK is final
    span.end()
    span.set_attribute("after.end", 1)
    span.end()  # a second end changes nothing
    assert span.attributes["list"] == (1, 2)
    assert len(span.attributes) == MAX_ATTRIBUTES and "after.end" not in span.attributes
    assert span.dropped_attributes == 1 + 6
    assert span.status.status_code is StatusCode.OK
    assert MessageToDict(ExportTraceServiceRequest.FromString(encode_spans_request([span])))


def test_record_exception_adds_the_sdks_exception_event() -> None:
    _, lean, _ = _lean()
    span = lean.start("GET", Context(), SpanKind.SERVER, {})
    try:
        raise ValueError("boom")
    except ValueError as exc:
        span.record_exception(exc)
    (event,) = span.events
    assert event.name == "exception" and event.attributes["exception.type"] == "ValueError"
    assert "boom" in event.attributes["exception.stacktrace"]


def test_a_foreign_processor_gets_sdk_spans() -> None:
    provider, lean, collected = _lean()
    foreign = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(foreign))
    span = lean.start("GET", Context(), SpanKind.SERVER, {"a": 1})
    span.end()
    assert not isinstance(span, LeanSpan)
    assert [s.name for s in foreign.get_finished_spans()] == ["GET"] and len(collected.spans) == 1


@pytest.mark.parametrize("sampled", [True, False])
def test_queueing_processor_is_a_sink(sampled: bool) -> None:
    provider = TracerProvider(sampler=None if sampled else ParentBased(TraceIdRatioBased(0.0)))
    exporter = InMemorySpanExporter()
    processor = QueueingSpanProcessor(exporter, QueueConfig())
    provider.add_span_processor(processor)
    lean = LeanSpans(provider, provider.get_tracer("x"), (QueueingSpanProcessor,))
    lean.start("GET", Context(), SpanKind.SERVER, {}).end()
    processor.force_flush()
    assert len(exporter.get_finished_spans()) == (1 if sampled else 0)
    processor.shutdown()


@pytest.mark.parametrize(("route", "status_code"), [("/items/{id}", 200), ("/items/{id}", 503), (None, 404), (None, 0)])
def test_the_server_layers_end_of_a_request_is_the_same_for_lean_and_sdk_spans(
    route: str | None, status_code: int
) -> None:
    from instrumentation._internal.fastapi import ServerSpanMiddleware

    layer = ServerSpanMiddleware(lambda *args: None, excluded_urls=None, identify_request=None)
    provider, lean, collected = _lean()
    lean_span = lean.start("GET", Context(), SpanKind.SERVER, {"url.path": "/items/7"})
    assert isinstance(lean_span, LeanSpan)
    layer._end("GET", lean_span, route, status_code)

    sdk_exporter = InMemorySpanExporter()
    sdk_provider = TracerProvider(resource=provider.resource)
    sdk_provider.add_span_processor(SimpleSpanProcessor(sdk_exporter))
    sdk_span = sdk_provider.get_tracer("scope.a", "1.0").start_span(
        "GET", context=Context(), kind=SpanKind.SERVER, attributes={"url.path": "/items/7"},
        start_time=lean_span.start_time,
    )  # fmt: skip
    layer._end("GET", sdk_span, route, status_code)
    (finished,) = sdk_exporter.get_finished_spans()

    def fields(span: ReadableSpan) -> tuple[Any, ...]:
        return span.name, dict(span.attributes or {}), span.status.status_code, span.end_time is not None

    assert collected.spans == [lean_span]
    assert fields(lean_span) == fields(finished)
    assert lean_span.name == (f"GET {route}" if route else "GET")
    assert (lean_span.status.status_code is StatusCode.ERROR) == (status_code >= 500)


@pytest.mark.parametrize("status_code", [200, 503, 0])
@pytest.mark.parametrize("prefill", [0, MAX_ATTRIBUTES - 1, MAX_ATTRIBUTES])
@pytest.mark.parametrize("route_set_before", [False, True])
def test_end_request_is_the_generic_calls_in_one(status_code: int, prefill: int, route_set_before: bool) -> None:
    """name, http.route, the status code and an error status, then end: as set one by one, attribute
    limit included (a key already set is replaced, a new one past the limit is dropped and counted)."""
    _, lean, collected = _lean()
    error = Status(StatusCode.ERROR) if status_code >= 500 else None
    spans = []
    for one_call in (True, False):
        span = lean.start("GET", Context(), SpanKind.SERVER, {})
        if route_set_before:
            span.set_attribute(semconv.HTTP_ROUTE, "/before")
        for index in range(prefill):
            span.set_attribute(f"k{index}", index)
        if one_call:
            span.end_request("GET /items/{id}", "/items/{id}", status_code, error)
        else:
            span.update_name("GET /items/{id}")
            span.set_attribute(semconv.HTTP_ROUTE, "/items/{id}")
            if status_code:
                span.set_attribute(semconv.HTTP_RESPONSE_STATUS_CODE, status_code)
            if error is not None:
                span.set_status(error)
            span.end()
        spans.append(span)
    one, generic = spans
    assert collected.spans == spans
    assert (one.name, dict(one.attributes), one.dropped_attributes, one.status.status_code) == (
        generic.name,
        dict(generic.attributes),
        generic.dropped_attributes,
        generic.status.status_code,
    )
    one.end_request("GET /other", "/other", 200, None)  # ended: nothing changes, nothing is sent again
    assert one.name == "GET /items/{id}" and collected.spans == spans
