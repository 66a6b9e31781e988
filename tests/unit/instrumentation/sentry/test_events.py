"""instrumentation._internal.sentry.events: before_send / before_breadcrumb scrub and annotate."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import TracerProvider

from instrumentation import semconv
from instrumentation._internal.sentry.events import before_breadcrumb, before_send
from instrumentation._internal.stats import STATS
from instrumentation.scrubbing import SCRUBBED, SCRUBBED_ATTRIBUTE, Scrubber

SCRUBBER = Scrubber()
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


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
    event = before_send(SCRUBBER, {**_event(str(error)), "_meta": meta}, _hint_for(error))
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
        event = before_send(SCRUBBER, _event(), _hint_for(outer))
    assert event is not None
    assert event["tags"] == {"operation": "render"}
    assert event["contexts"]["trace"]["trace_id"] == TRACE_ID


def test_before_send_without_exception_takes_the_current_span_and_baggage() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    token = context.attach(baggage.set_baggage(semconv.USER_ID, "u_2"))
    try:
        with tracer.start_as_current_span("work") as span:
            event = before_send(SCRUBBER, {"message": "hello", "user": {"ip_address": None}}, {})
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
    result = before_send(SCRUBBER, event, _hint_for(error))
    assert result is not None
    assert result["contexts"]["trace"] == {"trace_id": TRACE_ID, "span_id": SPAN_ID, "op": "http.server"}


class _BrokenScrubber(Scrubber):
    def scrub(self, value: Any, path: str = "") -> tuple[Any, list[str]]:
        raise RuntimeError("scrubber bug")


def test_an_event_that_cannot_be_scrubbed_is_dropped_and_counted() -> None:
    before = STATS.snapshot().get("sentry_events_dropped_unscrubbed", 0)
    assert before_send(_BrokenScrubber(), _event(), {}) is None
    assert STATS.snapshot()["sentry_events_dropped_unscrubbed"] == before + 1
    assert before_breadcrumb(_BrokenScrubber(), {"message": "x"}, {}) is None


def test_before_breadcrumb_scrubs() -> None:
    crumb = {
        "category": "httplib",
        "data": {"url": "https://pay.example/charge?api_key=key_SEED", "method": "POST"},
        "message": "login as bob@example.com",
    }
    scrubbed = before_breadcrumb(SCRUBBER, crumb, {})
    assert scrubbed == {
        "category": "httplib",
        "data": {"url": f"https://pay.example/charge?api_key={SCRUBBED}", "method": "POST"},
        "message": f"login as {SCRUBBED}",
    }
    clean = {"category": "query", "message": "SELECT 1"}
    assert before_breadcrumb(SCRUBBER, clean, {}) is clean


@pytest.mark.parametrize(("status_code", "sent"), [(400, False), (404, False), (499, False), (500, True), (503, True)])
def test_before_send_drops_http_exceptions_below_500(status_code: int, sent: bool) -> None:
    from fastapi import HTTPException

    error = HTTPException(status_code=status_code, detail="x")
    assert (before_send(SCRUBBER, _event(), _hint_for(error)) is not None) is sent
    plain = ValueError("x")
    plain.status_code = status_code  # type: ignore[attr-defined]  # not an HTTPException: always sent
    assert before_send(SCRUBBER, _event(), _hint_for(plain)) is not None


def test_before_send_keeps_the_modules_list() -> None:
    # package names are no secrets, whatever they look like to the key rules
    modules = {"pwdlib": "0.2.1", "tokenizers": "0.19.1", "secretstorage": "3.3.3", "fastapi": "0.115.0"}
    event = before_send(SCRUBBER, {**_event(), "modules": dict(modules)}, {})
    assert event is not None and event["modules"] == modules


def _frame_event(frame_vars: dict[str, Any]) -> dict[str, Any]:
    frame = {"function": "handler", "vars": frame_vars}
    return {
        "event_id": "b" * 32,
        "exception": {"values": [{"type": "RuntimeError", "value": "boom", "stacktrace": {"frames": [frame]}}]},
    }


def test_before_send_scrubs_an_asgi_scope_in_frame_variables() -> None:
    # as sentry-sdk serialises frame variables: bytes and strings repr()'d, tuples as lists
    scope = {
        "type": "'http'",
        "headers": [
            ["b'host'", "b'api'"],
            ["b'cookie'", "b'sid=canary-cookie-01'"],
            ["b'x-api-key'", "b'canary-apikey-02'"],
            ["b'x-csrf-token'", "b'canary-csrf-03'"],
            ["b'x-hub-signature-256'", "b'sha256=canary04'"],
        ],
        "query_string": "b'token=canary-query-05'",
    }
    event = before_send(SCRUBBER, _frame_event({"scope": scope, "body": "b'password=canary-body-06'"}), {})
    assert event is not None and "canary" not in repr(event)
    assert event["exception"]["values"][0]["stacktrace"]["frames"][0]["vars"]["scope"]["headers"][0] == [
        "b'host'",
        "b'api'",
    ]


def test_before_send_scrubs_the_request_s_own_secrets_wherever_they_are() -> None:
    # a dependency cache keyed by (callable, scopes) holds a parsed cookie and a websocket's token:
    # nothing names them as secrets, but they are the request's own cookie and token values
    scope = {
        "type": "websocket",
        "headers": [(b"cookie", b"theme=dark; sid=canary-session-07"), (b"authorization", b"Bearer canary-bearer-08")],
        "query_string": b"token=canary-ws-token-09&room=lobby",
    }
    frame_vars = {
        "dependency_cache": {
            "(<function current_session at 0x7f>, ())": "'canary-session-07'",
            "(<function ws_auth at 0x7f>, ())": "'canary-ws-token-09'",
            "(<function bearer at 0x7f>, ())": "'canary-bearer-08'",
            "(<function room at 0x7f>, ())": "'lobby'",
        }
    }
    event = before_send(SCRUBBER, _frame_event(frame_vars), {"phonoglyph.asgi_scope": scope})
    assert event is not None and "canary" not in repr(event)
    cache = event["exception"]["values"][0]["stacktrace"]["frames"][0]["vars"]["dependency_cache"]
    assert cache["(<function room at 0x7f>, ())"] == "'lobby'"
    assert cache["(<function current_session at 0x7f>, ())"] == f"'{SCRUBBED}'"
    assert any(
        path.endswith("dependency_cache.(<function current_session at 0x7f>, ())")
        for path in event["extra"][SCRUBBED_ATTRIBUTE]
    )


def test_before_send_scrubs_database_errors_and_credential_formats() -> None:
    message = "(sqlite3.IntegrityError) UNIQUE constraint failed\n[parameters: (None, 'canary-param-10', 2)]"
    event = _event(message)
    event["extra"] = {"notify_webhook": "https://hooks.slack.com/services/T0CANARY/B0CANARY/canaryhook11"}
    scrubbed = before_send(SCRUBBER, event, {})
    assert scrubbed is not None and "canary" not in repr(scrubbed)
