"""instrumentation._internal.otel_scrubbing: the policy applied to OTel spans and log records."""

from __future__ import annotations

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, Status, StatusCode

from instrumentation import semconv
from instrumentation._internal.otel_scrubbing import ScrubbingLogExporter, ScrubbingSpanExporter
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
