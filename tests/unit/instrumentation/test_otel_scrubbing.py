"""instrumentation._internal.otel_scrubbing: the policy applied to OTel spans and log records."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.context import Context
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from instrumentation import semconv
from instrumentation._internal.otel_scrubbing import (
    ScrubbingLogExporter,
    ScrubbingSpanExporter,
    SpanScrubbing,
    scrub_span,
)
from instrumentation._internal.otlp_encoding import encode_spans_request
from instrumentation.scrubbing import SCRUBBED, SCRUBBED_ATTRIBUTE, Scrubber

SCRUBBER = Scrubber()
CARD = "4111 1111 1111 1111"


class _RecordingSpanExporter(InMemorySpanExporter):
    def __init__(self) -> None:
        super().__init__()
        self.flushed = False
        self.shut_down = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.flushed = True
        return True

    def shutdown(self) -> None:
        self.shut_down = True
        super().shutdown()


def test_span_exporter_scrubs_attributes_events_links_and_name() -> None:
    recorded = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("linked") as linked:
        pass
    with tracer.start_as_current_span(
        "GET /reset?token=tok_SEED",
        attributes={
            "url.full": "http://h/reset?token=tok_SEED",
            semconv.USER_ID: "u_1",
            semconv.SESSION_ID: "s_1",
        },
        links=[Link(linked.get_span_context(), {"auth": "Bearer link_SEED_0123"})],
    ) as span:
        span.add_event("note", {"email": "seed@example.com"})
        try:
            raise ValueError("no account for seed@example.com")
        except ValueError as error:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"ValueError: {error}"))
    inner = _RecordingSpanExporter()
    originals = recorded.get_finished_spans()
    assert ScrubbingSpanExporter(inner, SCRUBBER).export(originals) is SpanExportResult.SUCCESS
    exported = {s.name: s for s in inner.get_finished_spans()}
    assert exported["linked"] is originals[0]  # clean spans pass through without a copy
    scrubbed = exported[f"GET /reset?token={SCRUBBED}"]
    assert scrubbed.attributes["url.full"] == f"http://h/reset?token={SCRUBBED}"
    assert scrubbed.attributes[semconv.USER_ID] == "u_1"
    assert scrubbed.attributes[semconv.SESSION_ID] == "s_1"
    assert scrubbed.events[0].attributes == {"email": SCRUBBED}
    assert scrubbed.events[1].attributes["exception.message"] == f"no account for {SCRUBBED}"
    assert "seed@example.com" not in scrubbed.events[1].attributes["exception.stacktrace"]
    assert scrubbed.links[0].attributes == {"auth": SCRUBBED}
    assert scrubbed.context == span.get_span_context()
    assert scrubbed.parent == span.parent
    assert (scrubbed.start_time, scrubbed.end_time) == (span.start_time, span.end_time)
    assert scrubbed.status.status_code is StatusCode.ERROR
    assert scrubbed.status.description == f"ValueError: no account for {SCRUBBED}"
    assert scrubbed.attributes[SCRUBBED_ATTRIBUTE] == (
        "name",
        "status.description",
        "attributes.url.full",
        "events[0].attributes.email",
        "events[1].attributes.exception.message",
        "events[1].attributes.exception.stacktrace",
        "links[0].attributes.auth",
    )
    assert "SEED" not in repr(scrubbed.to_json())
    # the recording span itself is not modified
    assert span.attributes["url.full"] == "http://h/reset?token=tok_SEED"

    exporter = ScrubbingSpanExporter(inner, SCRUBBER)
    assert exporter.force_flush() and inner.flushed
    exporter.shutdown()
    assert inner.shut_down
    assert exporter.export([]) is SpanExportResult.FAILURE  # the inner result is returned


def test_log_exporter_scrubs_body_and_attributes() -> None:
    inner = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(ScrubbingLogExporter(inner, SCRUBBER)))
    logger = provider.get_logger("test")
    from opentelemetry._logs import LogRecord

    logger.emit(LogRecord(event_name="clean", body={"a": 1}, attributes={semconv.EVENT_ID: "e1"}))
    logger.emit(
        LogRecord(
            event_name="credits_purchased",
            body={"card": CARD, "note": "ok"},
            attributes={
                semconv.EVENT_ID: "e2",
                semconv.USER_ID: "u_1",
                "payment.card_number": CARD,
                "referrer": "https://x.io/?token=tok_SEED",
            },
        )
    )
    clean, dirty = inner.get_finished_logs()
    assert clean.log_record.body == {"a": 1}
    assert SCRUBBED_ATTRIBUTE not in clean.log_record.attributes
    record = dirty.log_record
    assert record.event_name == "credits_purchased"
    assert record.body == {"card": SCRUBBED, "note": "ok"}
    assert record.attributes[semconv.EVENT_ID] == "e2"
    assert record.attributes[semconv.USER_ID] == "u_1"
    assert record.attributes["payment.card_number"] == SCRUBBED
    assert record.attributes["referrer"] == f"https://x.io/?token={SCRUBBED}"
    assert record.attributes[SCRUBBED_ATTRIBUTE] == (
        "body.card",
        "attributes.payment.card_number",
        "attributes.referrer",
    )
    assert dirty.resource is not None and record.trace_id == clean.log_record.trace_id
    exporter = ScrubbingLogExporter(inner, SCRUBBER)
    assert exporter.force_flush()
    assert exporter.export([]) is LogRecordExportResult.SUCCESS


def test_exception_events_and_status_lose_the_data_they_quote() -> None:
    inner = _RecordingSpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ScrubbingSpanExporter(inner, SCRUBBER)))
    message = (
        "(psycopg2.errors.UniqueViolation) duplicate key\nDETAIL:  Key (email)=(canary@example.com) already exists.\n"
        "[parameters: (None, 'canary-param', 2)]"
    )
    with provider.get_tracer("t").start_as_current_span("db") as span:
        span.record_exception(RuntimeError(message))
        span.set_status(Status(StatusCode.ERROR, f"IntegrityError: {message}"))
        span.set_attribute("notify_webhook", "https://hooks.slack.com/services/T0CANARY/B0CANARY/canaryhook")
    (exported,) = inner.get_finished_spans()
    text = repr(dict(exported.attributes or {})) + repr([dict(e.attributes or {}) for e in exported.events])
    assert "canary" not in text + (exported.status.description or "")
    assert exported.events[0].attributes["exception.message"].endswith(f"[parameters: {SCRUBBED}]")
    scrubbed_paths = exported.attributes[SCRUBBED_ATTRIBUTE]
    assert "status.description" in scrubbed_paths and "events[0].attributes.exception.message" in scrubbed_paths


def test_a_bytes_log_body_is_scrubbed() -> None:
    inner = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(ScrubbingLogExporter(inner, SCRUBBER)))
    provider.get_logger("t").emit(body=b"token=canary-bytes&x=1", attributes={"ok": "fine"})
    (exported,) = inner.get_finished_logs()
    assert exported.log_record.body == f"token={SCRUBBED}&x=1".encode()


# -- SpanScrubbing: what scrubbing found clean is encoded without scrubbing it again -------------------


def _lean_spans() -> tuple[Any, list[Any]]:
    """LeanSpans of a provider, and the list the spans that end reach."""
    from instrumentation._internal.lean_span import LeanSpans

    class Collected:
        def __init__(self) -> None:
            self.spans: list[Any] = []
            self.put_span = self.spans.append

        def on_start(self, *args: Any) -> None: ...

        def on_end(self, span: Any) -> None:
            self.spans.append(span)

        def shutdown(self) -> None: ...

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    provider = TracerProvider()
    collected = Collected()
    provider.add_span_processor(collected)  # type: ignore[arg-type]
    return LeanSpans(provider, provider.get_tracer("scope"), (Collected,)), collected.spans


def _server_span(lean: Any, attributes: dict[str, Any], name: str = "GET /items/{id}", status: Any = None) -> None:
    span = lean.start("GET", Context(), SpanKind.SERVER, dict(attributes))
    span.end_request(name, "/items/{id}", 200, status)


CLEAN_ATTRIBUTES = {
    semconv.URL_PATH: "/items/7",
    semconv.URL_SCHEME: "http",
    semconv.HTTP_REQUEST_METHOD: "GET",
    semconv.SERVER_ADDRESS: "127.0.0.1",
    semconv.SERVER_PORT: 8000,
}


def _decoded(body: bytes) -> list[dict[str, Any]]:
    request = ExportTraceServiceRequest.FromString(body)
    return [
        MessageToDict(span)
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]


def test_span_scrubbing_encodes_what_scrubbing_then_encoding_would(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each span, seen first or again, with secrets in new places after its clean twins: the bytes are
    the ones scrub_span then encode_spans_request give, and no secret is in them."""
    lean, ended = _lean_spans()
    secret = "sk_live_0123456789abcdefghij"
    _server_span(lean, CLEAN_ATTRIBUTES)
    _server_span(lean, CLEAN_ATTRIBUTES)  # all known clean by now
    _server_span(lean, {**CLEAN_ATTRIBUTES, semconv.URL_QUERY: f"api_key={secret}"})
    _server_span(lean, {**CLEAN_ATTRIBUTES, "password": "hunter2-hunter2"})
    _server_span(lean, {**CLEAN_ATTRIBUTES, semconv.URL_PATH: f"/reset/{secret}"})
    _server_span(lean, CLEAN_ATTRIBUTES, name=f"GET /reset/{secret}")
    _server_span(lean, CLEAN_ATTRIBUTES, status=Status(StatusCode.ERROR, f"token {secret} refused"))
    _server_span(lean, {**CLEAN_ATTRIBUTES, "retry": True, "count": 1, "ratio": 0.5, "tags": ("a", "b")})
    _server_span(lean, {**CLEAN_ATTRIBUTES, "retry": 1, "count": True})  # a bool equals an int
    _server_span(lean, {**CLEAN_ATTRIBUTES, "note": "x" * 200})
    _server_span(lean, CLEAN_ATTRIBUTES)
    scrubbing = SpanScrubbing(SCRUBBER)
    expected = encode_spans_request([scrub_span(span, SCRUBBER) for span in ended])
    assert scrubbing.encode_request(ended) == expected
    assert scrubbing.encode_request(ended) == expected  # the second time from what it remembered
    assert secret.encode() not in expected and b"hunter2" not in expected
    spans = _decoded(expected)
    assert {a["key"]: a["value"] for a in spans[7]["attributes"]}["retry"] == {"boolValue": True}
    assert {a["key"]: a["value"] for a in spans[8]["attributes"]}["retry"] == {"intValue": "1"}
    assert {a["key"]: a["value"] for a in spans[8]["attributes"]}["count"] == {"boolValue": True}


def test_span_scrubbing_skips_the_scrubber_for_spans_it_knows_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    lean, ended = _lean_spans()
    for path in ("/items/1", "/items/2"):
        _server_span(lean, {**CLEAN_ATTRIBUTES, semconv.URL_PATH: path})
    scrubbing = SpanScrubbing(SCRUBBER)
    scrubbing.encode_request(ended)
    scrubbed: list[Any] = []
    monkeypatch.setattr(
        "instrumentation._internal.otel_scrubbing.scrub_span",
        lambda span, scrubber: scrubbed.append(span) or scrub_span(span, scrubber),
    )
    first = scrubbing.encode_request(ended)
    _server_span(lean, {**CLEAN_ATTRIBUTES, semconv.URL_PATH: "/items/3"})  # one new value
    second = scrubbing.encode_request(ended)
    assert scrubbed == [ended[2]]
    assert _decoded(second)[:2] == _decoded(first)


def test_span_scrubbing_remembers_a_bounded_number_of_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("instrumentation._internal.otel_scrubbing.MAX_KNOWN_CLEAN", 10)
    lean, ended = _lean_spans()
    for index in range(40):
        _server_span(lean, {**CLEAN_ATTRIBUTES, semconv.URL_PATH: f"/items/{index}"})
    scrubbing = SpanScrubbing(SCRUBBER)
    assert scrubbing.encode_request(ended) == encode_spans_request(ended)
    assert 0 < len(scrubbing._clean_pairs) <= 10
