"""The scrubbing policy: sensitive keys and values replaced, identity kept, paths recorded."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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
from instrumentation._internal.scrubbing import (
    MAX_MEMOISED_STRINGS,
    SCRUBBED,
    SCRUBBED_ATTRIBUTE,
    Scrubber,
    ScrubbingConfig,
    ScrubbingLogExporter,
    ScrubbingSpanExporter,
    _luhn_valid,
)

SCRUBBER = Scrubber()
CARD = "4111 1111 1111 1111"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "user_password",
        "passwd",
        "pwd",
        "client_secret",
        "token",
        "access_token",
        "X-Auth-Token",
        "csrftoken",
        "authorization",
        "http.request.header.authorization",
        "Proxy-Authorization",
        "api_key",
        "apikey",
        "X-API-Key",
        "cookie",
        "Set-Cookie",
        "http.request.header.cookie",
        "sessionid",
        "session_secret",
        "session_key",
        "card_number",
        "cardNumber",
        "credit_card",
        "cvv",
        "cvc",
        "card.cvv",
        "iban",
        "private_key",
        "aws_credentials",
    ],
)
def test_sensitive_keys_lose_their_value(key: str) -> None:
    scrubbed, paths = SCRUBBER.scrub({key: "s3cr3t-value", "keep": "x"})
    assert scrubbed == {key: SCRUBBED, "keep": "x"}
    assert paths == [key]


@pytest.mark.parametrize(
    "key",
    [
        semconv.USER_ID,
        semconv.SESSION_ID,
        semconv.USER_GUEST,
        semconv.EVENT_ID,
        semconv.FILE_ID,
        semconv.PROJECT_ID,
        semconv.JOB_ID,
        semconv.RENDER_ID,
        "trace_id",
        "span_id",
        "parent_span_id",
    ],
)
def test_identity_and_correlation_keys_are_never_scrubbed(key: str) -> None:
    # even when the value looks sensitive (a user id may be an e-mail address)
    attributes = {key: "bob@example.com"}
    scrubbed, paths = SCRUBBER.scrub_attributes(attributes)
    assert scrubbed is attributes
    assert paths == []


def test_session_id_survives_the_session_rules() -> None:
    scrubbed, paths = SCRUBBER.scrub({"session.id": "s_1", "sessionid": "django-secret", "session": "s"})
    assert scrubbed == {"session.id": "s_1", "sessionid": SCRUBBED, "session": "s"}
    assert paths == ["sessionid"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sent Bearer abcdefghijkl.mnop", f"sent Bearer {SCRUBBED}"),
        ("Authorization: Bearer abcdefghijkl.mnop", f"Authorization: {SCRUBBED}"),
        ('body {"password": "pw 1", "name": "x"}', f'body {{"password": {SCRUBBED}, "name": "x"}}'),
        ("    secret = 'abc'  # source line", f"    secret = {SCRUBBED}  # source line"),
        ("error: password: hunter2 rejected", f"error: password: {SCRUBBED} rejected"),
        ("basic dXNlcjpwYXNzd29yZA==", f"basic {SCRUBBED}"),
        ("retry with token 9f8e7d6c5b4a3f2e", f"retry with token {SCRUBBED}"),
        ("/oauth/cb?code=4/0AX4Xf&state=s1", f"/oauth/cb?code={SCRUBBED}&state=s1"),
        (f"token {JWT}", f"token {SCRUBBED}"),
        (f"jwt={JWT}&x=1", f"jwt={SCRUBBED}&x=1"),
        (f"paid with {CARD} today", f"paid with {SCRUBBED} today"),
        ("card 4111-1111-1111-1111", f"card {SCRUBBED}"),
        ("amex 378282246310005.", f"amex {SCRUBBED}."),
        ("write to bob.smith+tag@mail.example.co.uk now", f"write to {SCRUBBED} now"),
        ("https://a.io/reset?user=1&token=abc123&page=2", f"https://a.io/reset?user=1&token={SCRUBBED}&page=2"),
        ("/cb?code=xyz&state=1", f"/cb?code={SCRUBBED}&state=1"),
        ("api_key=k1;password_confirm=p2", f"api_key={SCRUBBED};password_confirm={SCRUBBED}"),
        ("token=abc&page=2", f"token={SCRUBBED}&page=2"),
        ("login failed password=hunter2 for x", f"login failed password={SCRUBBED} for x"),
        ("postgres://admin:hunter2@db:5432/app", f"postgres://{SCRUBBED}@db:5432/app"),
    ],
)
def test_sensitive_values_are_replaced_inside_strings(text: str, expected: str) -> None:
    assert SCRUBBER.scrub_string(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # fails Luhn: an id, not a card
        "job 1234567890123 done",  # 13 digits, fails Luhn
        "design=1&keyword=drums&author=me&page=2",
        "status code: 500, status_code=502, error_code=E42",
        "token refreshed; token verification failed",
        "stem_separation of 12.5 s at 44100 Hz",
        "4bf92f3577b34da6a3ce929d0e0e4736",  # a trace id
        "user@localhost",  # not an address with a domain
        "",
    ],
)
def test_clean_strings_are_returned_as_the_same_object(text: str) -> None:
    assert SCRUBBER.scrub_string(text) is text


def test_url_attributes_are_scrubbed_and_paths_recorded_without_values() -> None:
    attributes = {
        "url.full": "https://api.phonoglyph.io/v1/files?token=tok_SEED&page=1",
        "url.query": "token=tok_SEED",
        "http.target": "/v1/files?api_key=key_SEED",
        "http.request.header.authorization": ("Bearer bearer_SEED_0123",),
        "http.route": "/v1/files",
    }
    scrubbed, paths = SCRUBBER.scrub_attributes(attributes, "attributes")
    assert scrubbed == {
        "url.full": f"https://api.phonoglyph.io/v1/files?token={SCRUBBED}&page=1",
        "url.query": f"token={SCRUBBED}",
        "http.target": f"/v1/files?api_key={SCRUBBED}",
        "http.request.header.authorization": SCRUBBED,
        "http.route": "/v1/files",
    }
    assert paths == [
        "attributes.url.full",
        "attributes.url.query",
        "attributes.http.target",
        "attributes.http.request.header.authorization",
    ]
    assert not any("SEED" in path for path in paths)


def test_nested_bodies_are_scrubbed_recursively_and_only_changed_containers_copied() -> None:
    clean_branch = {"title": "my song", "tags": ["drums", "bass"]}
    body = {
        "request": {
            "query_string": "a=1&token=tok_SEED",
            "data": {"form": [{"password": "pw_SEED"}, {"note": "mail me at x@y.io"}]},
        },
        "clean": clean_branch,
        "count": 3,
        "ratio": 0.5,
        "none": None,
        "tuple": ("fine", f"card {CARD}"),
    }
    scrubbed, paths = SCRUBBER.scrub(body)
    assert scrubbed["request"]["query_string"] == f"a=1&token={SCRUBBED}"
    assert scrubbed["request"]["data"]["form"] == [{"password": SCRUBBED}, {"note": f"mail me at {SCRUBBED}"}]
    assert scrubbed["tuple"] == ("fine", f"card {SCRUBBED}")
    assert scrubbed["clean"] is clean_branch
    assert body["request"]["query_string"] == "a=1&token=tok_SEED"  # the input is not mutated
    assert paths == [
        "request.query_string",
        "request.data.form[0].password",
        "request.data.form[1].note",
        "tuple[1]",
    ]


def test_clean_input_is_returned_untouched() -> None:
    value = {"a": "b", "list": [1, 2.0, True, None, {"x": ("y", "z")}], "n": 1}
    scrubbed, paths = SCRUBBER.scrub(value)
    assert scrubbed is value
    assert paths == []


def test_sensitive_key_with_empty_or_boolean_value_is_left_alone() -> None:
    value = {"password": "", "token": None, "has_password": True}
    assert SCRUBBER.scrub(value) == (value, [])


def test_sensitive_key_replaces_a_whole_container() -> None:
    scrubbed, paths = SCRUBBER.scrub({"cookies": {"session": "abc", "theme": "dark"}})
    assert scrubbed == {"cookies": SCRUBBED}
    assert paths == ["cookies"]


def test_patterns_are_extensible() -> None:
    scrubber = Scrubber(
        ScrubbingConfig(
            extra_key_patterns=(r"^x-tenant-sig$",),
            extra_value_patterns=(r"acct_[0-9]{6}",),
            safe_keys=("api_key_id",),
        )
    )
    scrubbed, paths = scrubber.scrub({"x-tenant-sig": "v", "note": "charge ACCT_123456 now", "api_key_id": "k_1"})
    assert scrubbed == {"x-tenant-sig": SCRUBBED, "note": f"charge {SCRUBBED} now", "api_key_id": "k_1"}
    assert paths == ["x-tenant-sig", "note"]
    # the default policy does not know these
    assert Scrubber().scrub({"x-tenant-sig": "v"}) == ({"x-tenant-sig": "v"}, [])


def test_config_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHONOGLYPH_SCRUB_KEYS", "^tenant$, ^pin$")
    monkeypatch.setenv("PHONOGLYPH_SCRUB_VALUES", r"acct_\d+")
    config = ScrubbingConfig.from_env()
    assert config == ScrubbingConfig(extra_key_patterns=("^tenant$", "^pin$"), extra_value_patterns=(r"acct_\d+",))
    scrubbed, _ = Scrubber(config).scrub({"pin": 1234, "x": "acct_42"})
    assert scrubbed == {"pin": SCRUBBED, "x": SCRUBBED}


def test_config_from_empty_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHONOGLYPH_SCRUB_KEYS", raising=False)
    monkeypatch.delenv("PHONOGLYPH_SCRUB_VALUES", raising=False)
    assert ScrubbingConfig.from_env() == ScrubbingConfig()


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


def test_memoised_verdicts_give_the_same_answers_and_stay_bounded() -> None:
    scrubber = Scrubber()
    dirty = "https://x.io/?token=tok_SEED"
    first = scrubber.scrub_string(dirty)
    assert scrubber.scrub_string(dirty) == first == f"https://x.io/?token={SCRUBBED}"  # never memoised as clean
    clean = "/v1/projects/p_1/files"
    assert scrubber.scrub_string(clean) is clean
    assert scrubber.scrub_string(clean) is clean
    for index in range(MAX_MEMOISED_STRINGS + 10):
        scrubber.scrub_string(f"/v1/files/f_{index}")
    assert len(scrubber._clean_strings) <= MAX_MEMOISED_STRINGS
    for _ in range(2):
        assert scrubber.is_sensitive_key("X-Api-Key") and not scrubber.is_safe_key("X-Api-Key")
        assert scrubber.is_safe_key(semconv.SESSION_ID) and not scrubber.is_sensitive_key(semconv.SESSION_ID)
        assert not scrubber.is_sensitive_key("http.route") and not scrubber.is_safe_key("http.route")


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_JSON_VALUES)
def test_scrub_is_idempotent_and_returns_the_same_object_when_nothing_was_scrubbed(value: Any) -> None:
    scrubbed, paths = SCRUBBER.scrub(value)
    if not paths:
        assert scrubbed is value
    again, more_paths = SCRUBBER.scrub(scrubbed)
    assert again == scrubbed
    assert more_paths == []


def _with_luhn_check_digit(body: str) -> str:
    for check in "0123456789":
        if _luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable: one check digit always fits")


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet="0123456789", min_size=12, max_size=18),
    st.sampled_from(["", " ", "-"]),
    st.sampled_from(["paid with {} today", "{}", "card={}&x=1", "[{}]"]),
)
def test_every_luhn_valid_card_number_is_scrubbed(body: str, separator: str, template: str) -> None:
    digits = _with_luhn_check_digit(body)
    number = separator.join(digits[i : i + 4] for i in range(0, len(digits), 4))
    scrubbed = SCRUBBER.scrub_string(template.format(number))
    assert digits not in scrubbed.replace(" ", "").replace("-", "")


@pytest.mark.timeout(60)
def test_adversarial_strings_cost_linear_time() -> None:
    # Before the e-mail rule was anchored, a run of n word characters before an "@" cost O(n^2)
    # (20 KB: 2 s; this 1 MB input: over an hour). Linear, it takes well under a second; the
    # timeout is a guard against that complexity class, with a margin of about 100x, not a benchmark.
    scrubber = Scrubber()
    run = 1_000_000
    for text in ("a" * run + "@", "a@" * (run // 2), "x." * (run // 2) + "@b"):
        scrubbed, paths = scrubber.scrub(text)
        assert scrubbed == text and paths == []
