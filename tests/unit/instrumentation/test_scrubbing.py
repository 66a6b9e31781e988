"""instrumentation.scrubbing, the public policy: sensitive keys and values replaced, identity kept,
paths recorded."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instrumentation import scrubbing, semconv
from instrumentation.scrubbing import (
    MAX_MEMOISED_STRINGS,
    MAX_STRING_CHARS,
    SCRUBBED,
    SCRUBBED_ATTRIBUTE,
    Scrubber,
    ScrubbingConfig,
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
    scrubbed, paths = SCRUBBER.scrub(attributes)
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
    scrubbed, paths = SCRUBBER.scrub(attributes, "attributes")
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


def test_memoised_verdicts_give_the_same_answers_and_stay_bounded() -> None:
    scrubber = Scrubber()
    dirty = "https://x.io/?token=tok_SEED"
    first = scrubber.scrub_string(dirty)
    assert scrubber.scrub_string(dirty) == first == f"https://x.io/?token={SCRUBBED}"  # never memoised as clean
    clean = "/v1/projects/p_1/files"
    assert scrubber.scrub_string(clean) is clean
    assert scrubber.scrub_string(clean) is clean
    for index in range(MAX_MEMOISED_STRINGS + 10):  # fills the memo past its bound: it starts over
        scrubber.scrub_string(f"/v1/files/f_{index}")
    assert scrubber.scrub_string(clean) is clean
    assert scrubber.scrub_string(dirty) == first
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


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = int(char) * (2 if index % 2 else 1)
        total += digit - 9 if digit > 9 else digit
    return total % 10 == 0


def _with_luhn_check_digit(body: str) -> str:
    for check in "0123456789":
        if _luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable: one check digit always fits")


def test_luhn_helper_of_these_tests() -> None:
    assert _luhn_valid("4111111111111111") and not _luhn_valid("4111111111111112")


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
    # An unanchored e-mail rule would cost time quadratic in a run of word characters before an "@"
    # (this 1 MB input would take hours); the timeout guards against that complexity class, with a
    # wide margin, and is not a benchmark.
    scrubber = Scrubber()
    run = 1_000_000
    for text in ("a" * run + "@", "a@" * (run // 2), "x." * (run // 2) + "@b"):
        scrubbed, paths = scrubber.scrub(text)
        assert scrubbed == text and paths == []


def test_all_lists_the_public_names() -> None:
    imported = {"annotations", "re", "dataclass", "Any", "Final", "Mapping", "semconv"}
    public = {name for name in vars(scrubbing) if not name.startswith("_")} - imported
    assert sorted(scrubbing.__all__) == sorted(public)


def test_the_policy_loads_no_opentelemetry() -> None:
    code = "import sys, instrumentation.scrubbing; print(any(m.startswith('opentelemetry') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"


# -- scrub_properties: flat analytics properties, many in a row ------------------------------------

PROPERTY_CASES = [
    {"url.full": "https://x/api?token=abc123456&page=2", "http.route": "/api"},
    {"password": "hunter2", "api_key": "", "cookie": True, "session.id": "s", "$session_id": "s"},
    {"user.email": "ann@example.com", "trace_id": "5b8e", "span_id": "eee1", "phonoglyph.file.id": "f@x.io"},
    {"nested": {"authorization": "Bearer abcdefghijklmnop", "ok": [1, "card 4111 1111 1111 1111"]}},
    {"audio.duration_s": 12.5, "audio.channels": 2, "note": "clean text"},
    {"phonoglyph.scrubbed": ["earlier.path"], "secret": "x"},
]


@pytest.mark.parametrize("properties", PROPERTY_CASES)
def test_scrub_properties_gives_the_verdicts_of_scrub(properties: dict[str, Any]) -> None:
    expected, expected_paths = Scrubber().scrub(dict(properties))
    scrubber = Scrubber()
    for _ in range(2):  # the second pass runs on the memos
        result, paths = scrubber.scrub_properties(properties)
        assert paths == expected_paths
        if not paths:
            assert result is properties
            continue
        previous = properties.get(SCRUBBED_ATTRIBUTE, [])
        assert result == {**expected, SCRUBBED_ATTRIBUTE: previous + paths}
        assert properties == dict(properties)  # the input is not modified


def test_scrub_properties_cuts_long_strings_before_scrubbing() -> None:
    text = "a" * 100_000 + " ann@example.com"
    result, paths = Scrubber().scrub_properties({"blob": text, "short": "ok"})
    assert result == {"blob": "a" * MAX_STRING_CHARS + "…", "short": "ok", SCRUBBED_ATTRIBUTE: ["blob"]}
    assert paths == ["blob"]
    medium = "word " * 100  # longer than the memoised strings, shorter than the cut
    assert Scrubber().scrub_properties({"text": medium}) == ({"text": medium}, [])
