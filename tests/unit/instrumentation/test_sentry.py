"""The Sentry glue without a network: propagator, before_send/before_breadcrumb, no-DSN behaviour."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from instrumentation import semconv
from instrumentation._internal import sentry
from instrumentation._internal.scrubbing import SCRUBBED, SCRUBBED_ATTRIBUTE, Scrubber
from instrumentation._internal.stats import STATS

SCRUBBER = Scrubber()
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


@pytest.fixture
def restore_propagator() -> Iterator[None]:
    previous = propagate.get_global_textmap()
    try:
        yield
    finally:
        propagate.set_global_textmap(previous)


@pytest.mark.parametrize("dsn", [None, ""])
def test_without_dsn_nothing_happens_and_nothing_logs(
    dsn: str | None, caplog: pytest.LogCaptureFixture, restore_propagator: None
) -> None:
    provider = TracerProvider()
    propagator = propagate.get_global_textmap()
    with caplog.at_level(logging.DEBUG):
        assert (
            sentry.setup_sentry(dsn=dsn, environment="test", release="1", tracer_provider=provider, scrubber=SCRUBBER)
            is False
        )
    assert caplog.records == []
    assert not sentry_sdk.get_client().is_active()
    assert propagate.get_global_textmap() is propagator
    assert provider._active_span_processor._span_processors == ()


def _remote_context(carrier: dict[str, str]) -> SpanContext:
    return trace.get_current_span(sentry.global_propagator().extract(carrier)).get_span_context()


def test_propagator_extracts_w3c_traceparent_and_baggage() -> None:
    ctx = sentry.global_propagator().extract(
        {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01", "baggage": "user.id=u_1,session.id=s_1"}
    )
    span_context = trace.get_current_span(ctx).get_span_context()
    assert (span_context.trace_id, span_context.span_id) == (int(TRACE_ID, 16), int(SPAN_ID, 16))
    assert span_context.is_remote and span_context.trace_flags.sampled
    assert baggage.get_all(ctx) == {"user.id": "u_1", "session.id": "s_1"}


def test_propagator_extracts_sentry_trace() -> None:
    span_context = _remote_context({"sentry-trace": f"{TRACE_ID}-{SPAN_ID}-1"})
    assert (span_context.trace_id, span_context.span_id) == (int(TRACE_ID, 16), int(SPAN_ID, 16))


def test_traceparent_wins_over_sentry_trace() -> None:
    other_trace = "a" * 32
    span_context = _remote_context(
        {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01", "sentry-trace": f"{other_trace}-{'b' * 16}-1"}
    )
    assert span_context.trace_id == int(TRACE_ID, 16)


def test_propagator_injects_w3c_headers_and_sentry_trace() -> None:
    span = NonRecordingSpan(
        SpanContext(int(TRACE_ID, 16), int(SPAN_ID, 16), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    )
    ctx = baggage.set_baggage(semconv.USER_ID, "u_1", trace.set_span_in_context(span))
    carrier: dict[str, str] = {}
    sentry.global_propagator().inject(carrier, ctx)
    assert carrier == {
        "traceparent": f"00-{TRACE_ID}-{SPAN_ID}-01",
        "sentry-trace": f"{TRACE_ID}-{SPAN_ID}-1",
        "baggage": "user.id=u_1",
    }
    assert sentry.global_propagator().fields == {"traceparent", "tracestate", "baggage", "sentry-trace"}


def test_propagator_injects_nothing_without_a_span() -> None:
    carrier: dict[str, str] = {}
    sentry.global_propagator().inject(carrier, context.Context())
    assert carrier == {}


def _hint_for(exception: BaseException) -> dict[str, Any]:
    return {"exc_info": (type(exception), exception, exception.__traceback__)}


def _event(message: str = "boom") -> dict[str, Any]:
    return {
        "event_id": "a" * 32,
        "contexts": {"trace": {"trace_id": "f" * 32, "span_id": "e" * 16, "parent_span_id": None}},
        "exception": {"values": [{"type": "ValueError", "value": message}]},
        "request": {
            "url": "http://api/v1/files",
            "query_string": "page=1&token=tok_SEED",
            "headers": {"Authorization": "Bearer bearer_SEED_123", "Cookie": "sessionid=ck_SEED"},
            "data": {"password": "pw_SEED", "title": "song"},
        },
    }


def test_before_send_adds_the_operation_context_and_scrubs() -> None:
    error = ValueError("cannot decode file of bob@example.com")
    error.__phonoglyph_context__ = {  # type: ignore[attr-defined]
        "operation": "stem_separation",
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        semconv.USER_ID: "u_1",
        semconv.SESSION_ID: None,
        semconv.FILE_ID: "f_1",
        semconv.AUDIO_DURATION_S: 12.5,
        semconv.AUDIO_SAMPLE_RATE_HZ: 44100,
        semconv.OUTCOME: "failed",
        semconv.USER_GUEST: False,
    }
    meta = {"request": {"headers": {"Authorization": {"": {"rem": [["!config", "s"]]}}}}}
    event = sentry._before_send(SCRUBBER, {**_event(str(error)), "_meta": meta}, _hint_for(error))
    assert event is not None
    assert event["contexts"]["trace"] == {"trace_id": TRACE_ID, "span_id": SPAN_ID}
    assert event["tags"] == {"operation": "stem_separation"}
    assert event["contexts"]["audio_processing"] == {
        "operation": "stem_separation",
        semconv.FILE_ID: "f_1",
        semconv.AUDIO_DURATION_S: 12.5,
        semconv.AUDIO_SAMPLE_RATE_HZ: 44100,
    }
    assert event["user"] == {"id": "u_1"}
    assert event["exception"]["values"][0]["value"] == f"cannot decode file of {SCRUBBED}"
    assert event["request"]["query_string"] == f"page=1&token={SCRUBBED}"
    assert event["request"]["headers"] == {"Authorization": SCRUBBED, "Cookie": SCRUBBED}
    assert event["request"]["data"] == {"password": SCRUBBED, "title": "song"}
    assert event["extra"][SCRUBBED_ATTRIBUTE] == [
        "exception.values[0].value",
        "request.query_string",
        "request.headers.Authorization",
        "request.headers.Cookie",
        "request.data.password",
    ]
    assert event["_meta"] == meta  # Sentry's annotations are kept as they are
    assert "SEED" not in repr(event) and "bob@" not in repr(event)


def test_before_send_finds_the_context_on_the_cause() -> None:
    cause = RuntimeError("inner")
    context = {"operation": "render", "trace_id": TRACE_ID, "span_id": SPAN_ID}
    cause.__phonoglyph_context__ = context  # type: ignore[attr-defined]
    try:
        try:
            raise cause
        except RuntimeError as inner:
            raise ValueError("outer") from inner
    except ValueError as outer:
        event = sentry._before_send(SCRUBBER, _event(), _hint_for(outer))
    assert event is not None
    assert event["tags"] == {"operation": "render"}
    assert event["contexts"]["trace"]["trace_id"] == TRACE_ID


def test_before_send_uses_the_span_stamp_when_no_operation_was_left() -> None:
    provider = TracerProvider()
    sentry._stamp_exceptions_with_their_span()
    tracer = provider.get_tracer("test")
    error = ValueError("route failed")
    with tracer.start_as_current_span("GET /files") as span:
        span.set_attribute(semconv.USER_ID, "u_9")
        span.record_exception(error)
    # captured after the server span ended, outside it (as Sentry's ASGI middleware does)
    event = sentry._before_send(SCRUBBER, _event(), _hint_for(error))
    assert event is not None
    span_context = span.get_span_context()
    assert event["contexts"]["trace"] == {
        "trace_id": trace.format_trace_id(span_context.trace_id),
        "span_id": trace.format_span_id(span_context.span_id),
    }
    assert event["user"] == {"id": "u_9"}
    assert "tags" not in event


def test_the_innermost_span_stamps_an_exception() -> None:
    provider = TracerProvider()
    sentry._stamp_exceptions_with_their_span()
    tracer = provider.get_tracer("test")
    with pytest.raises(ValueError) as raised:
        with tracer.start_as_current_span("outer"):
            with tracer.start_as_current_span("inner") as inner:
                raise ValueError("x")
    assert raised.value.__phonoglyph_span__["span_id"] == trace.format_span_id(  # type: ignore[attr-defined]
        inner.get_span_context().span_id
    )


def test_before_send_without_exception_takes_the_current_span_and_baggage() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    token = context.attach(baggage.set_baggage(semconv.USER_ID, "u_2"))
    try:
        with tracer.start_as_current_span("work") as span:
            event = sentry._before_send(SCRUBBER, {"message": "hello", "user": {"ip_address": None}}, {})
    finally:
        context.detach(token)
    assert event is not None
    assert event["contexts"]["trace"]["trace_id"] == trace.format_trace_id(span.get_span_context().trace_id)
    assert event["user"] == {"ip_address": None, "id": "u_2"}
    assert "extra" not in event  # nothing was scrubbed


def test_before_send_leaves_a_matching_trace_context_alone() -> None:
    event = _event()
    event["contexts"]["trace"] = {"trace_id": TRACE_ID, "span_id": SPAN_ID, "op": "http.server"}
    error = ValueError("x")
    error.__phonoglyph_span__ = {"trace_id": TRACE_ID, "span_id": "1" * 16}  # type: ignore[attr-defined]
    result = sentry._before_send(SCRUBBER, event, _hint_for(error))
    assert result is not None
    assert result["contexts"]["trace"] == {"trace_id": TRACE_ID, "span_id": SPAN_ID, "op": "http.server"}


class _BrokenScrubber(Scrubber):
    def scrub(self, value: Any, path: str = "") -> tuple[Any, list[str]]:
        raise RuntimeError("scrubber bug")


def test_an_event_that_cannot_be_scrubbed_is_dropped_and_counted() -> None:
    before = STATS.snapshot().get("sentry_events_dropped_unscrubbed", 0)
    assert sentry._before_send(_BrokenScrubber(), _event(), {}) is None
    assert STATS.snapshot()["sentry_events_dropped_unscrubbed"] == before + 1
    assert sentry._before_breadcrumb(_BrokenScrubber(), {"message": "x"}, {}) is None


def test_before_breadcrumb_scrubs() -> None:
    crumb = {
        "category": "httplib",
        "data": {"url": "https://pay.example/charge?api_key=key_SEED", "method": "POST"},
        "message": "login as bob@example.com",
    }
    scrubbed = sentry._before_breadcrumb(SCRUBBER, crumb, {})
    assert scrubbed == {
        "category": "httplib",
        "data": {"url": f"https://pay.example/charge?api_key={SCRUBBED}", "method": "POST"},
        "message": f"login as {SCRUBBED}",
    }
    clean = {"category": "query", "message": "SELECT 1"}
    assert sentry._before_breadcrumb(SCRUBBER, clean, {}) is clean


# -- setup: integrations, the span switch, the request-error handler ------------------------------

UNREACHABLE_DSN = "http://publickey@127.0.0.1:9/1"  # never contacted: these tests send no event


@pytest.fixture
def sentry_setup(restore_propagator: None) -> Iterator[None]:
    try:
        yield
    finally:
        sentry.shutdown_sentry(timeout_s=0.1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, True), ("", True), ("on", True), ("ON", True), ("off", False), (" Off ", False), ("false", False),
     ("0", False), ("sometimes", True)],
)  # fmt: skip
def test_the_span_switch_reads_the_environment(
    value: str | None, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv(sentry.SPANS_ENV, raising=False)
    else:
        monkeypatch.setenv(sentry.SPANS_ENV, value)
    assert sentry.spans_enabled_from_env() is expected


@pytest.mark.parametrize(("env", "send_spans", "span_path"), [("on", None, True), ("off", None, False),
                                                               ("off", True, True), ("on", False, False)])  # fmt: skip
def test_setup_adds_the_span_path_to_sentry_unless_switched_off(
    env: str, send_spans: bool | None, span_path: bool, monkeypatch: pytest.MonkeyPatch, sentry_setup: None
) -> None:
    from instrumentation._internal import fastapi as fastapi_layer
    from instrumentation._internal.batching import QueueingSpanProcessor

    monkeypatch.setenv(sentry.SPANS_ENV, env)
    provider = TracerProvider()
    assert sentry.setup_sentry(
        dsn=UNREACHABLE_DSN, environment="test", release="1", tracer_provider=provider, scrubber=SCRUBBER,
        send_spans=send_spans,
    )  # fmt: skip
    processors = provider._active_span_processor._span_processors
    assert [type(p) for p in processors] == ([QueueingSpanProcessor] if span_path else [])
    assert len(sentry._active_span_processor) == len(processors)
    assert sentry_sdk.get_client().is_active()  # errors go to Sentry either way
    assert fastapi_layer.REQUEST_ERROR_HANDLERS.count(sentry.report_request_error) == 1
    sentry.shutdown_sentry(timeout_s=0.1)
    assert sentry.report_request_error not in fastapi_layer.REQUEST_ERROR_HANDLERS
    assert not sentry_sdk.get_client().is_active()


def test_no_web_framework_integration_hooks_the_request_path(sentry_setup: None) -> None:
    sentry.setup_sentry(
        dsn=UNREACHABLE_DSN, environment="test", release="1", tracer_provider=TracerProvider(), scrubber=SCRUBBER
    )
    installed = set(sentry_sdk.get_client().integrations)
    assert {"starlette", "fastapi"} <= {cls.identifier for cls in sentry._web_framework_integrations()}
    assert not installed & sentry.WEB_FRAMEWORK_INTEGRATIONS
    assert {"logging", "otlp"} <= installed  # errors logged with logger.exception still become events


# -- the request data of an error event ------------------------------------------------------------


class _Client:
    def __init__(self, **options: Any) -> None:
        self.options = {"send_default_pii": False, "max_request_body_size": "medium", **options}


def _scope(headers: dict[str, str], body: bytes | None = None) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "scheme": "https",
        "server": ("10.0.0.5", 8000),
        "root_path": "",
        "path": "/v1/billing",
        "query_string": b"page=2",
        "headers": [(name.encode(), value.encode()) for name, value in headers.items()],
    }
    if body is not None:
        scope[sentry.REQUEST_BODY_SCOPE_KEY] = body
    return scope


def test_request_data_has_method_url_query_headers_and_a_json_body() -> None:
    body = b'{"card": "4111 1111 1111 1111", "plan": "pro"}'
    headers = {"host": "api.example", "content-type": "application/json", "content-length": str(len(body))}
    assert sentry._request_data(_scope(headers, body), _Client()) == {
        "method": "POST",
        "url": "https://api.example/v1/billing",
        "query_string": "page=2",
        "headers": headers,
        "data": {"card": "4111 1111 1111 1111", "plan": "pro"},  # before_send scrubs it
    }


def test_request_data_form_fields_and_cookies_only_with_send_default_pii() -> None:
    body = b"user=bob&password=pw_SEED&empty="
    headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8", "content-length": str(len(body)),
               "cookie": "sessionid=ck_SEED; theme=dark"}  # fmt: skip
    without_pii = sentry._request_data(_scope(headers, body), _Client())
    assert without_pii["url"] == "https://10.0.0.5:8000/v1/billing"  # no Host header: the server address
    assert without_pii["data"] == {"user": "bob", "password": "pw_SEED", "empty": ""}
    assert "cookies" not in without_pii
    with_pii = sentry._request_data(_scope(headers, body), _Client(send_default_pii=True))
    assert with_pii["cookies"] == {"sessionid": "ck_SEED", "theme": "dark"}


@pytest.mark.parametrize(
    ("headers", "body", "data"),
    [
        ({}, None, None),  # no body
        ({"content-length": "0"}, b"", None),
        ({"content-type": "application/json", "content-length": "12"}, None, "raw"),  # the app never read it
        ({"content-type": "audio/wav", "content-length": "4"}, b"RIFF", "raw"),
        ({"content-type": "application/json", "content-length": "5"}, b"{nope", "raw"),  # not JSON after all
        ({"content-type": "application/json", "content-length": "10001"}, b"{}", "over size"),
    ],
)
def test_request_data_annotates_a_body_it_does_not_show(
    headers: dict[str, str], body: bytes | None, data: str | None
) -> None:
    from sentry_sdk.utils import AnnotatedValue

    found = sentry._request_data(_scope(headers, body), _Client()).get("data")
    expected = {
        None: None,
        "raw": AnnotatedValue.removed_because_raw_data(),
        "over size": AnnotatedValue.removed_because_over_size_limit(),
    }[data]
    if expected is None:
        assert found is None
    else:
        assert (found.value, found.metadata) == (expected.value, expected.metadata)


@pytest.mark.parametrize(("status_code", "sent"), [(400, False), (404, False), (499, False), (500, True), (503, True)])
def test_before_send_drops_http_exceptions_below_500(status_code: int, sent: bool) -> None:
    from fastapi import HTTPException

    error = HTTPException(status_code=status_code, detail="x")
    assert (sentry._before_send(SCRUBBER, _event(), _hint_for(error)) is not None) is sent
    plain = ValueError("x")
    plain.status_code = status_code  # type: ignore[attr-defined]  # not an HTTPException: always sent
    assert sentry._before_send(SCRUBBER, _event(), _hint_for(plain)) is not None
