"""instrumentation.scrubbing on hostile and foreign input: credentials recognised by their format,
byte strings and header pairs, database errors that quote their data, encoded forms, and work that
stays linear in the input and bounded per call."""

from __future__ import annotations

import re
from typing import Any

import pytest

from instrumentation import scrubbing
from instrumentation.scrubbing import MAX_STRING_CHARS, SCRUBBED, Scrubber, ScrubbingConfig

SCRUBBER = Scrubber()

# Shaped like real credentials, made up for these tests (no real service accepts them).
CREDENTIALS = {
    "slack_webhook": "https://hooks.slack.com/services/T0CANARY1/B0CANARY2/cAnArYwEbHoOkSeCrEt0001",
    "discord_webhook": "https://discord.com/api/webhooks/112233445566778899/CaNaRy_dIsCoRd-SeCrEt",
    "teams_webhook": "https://contoso.webhook.office.com/webhookb2/0aa-11@22/IncomingWebhook/CaNaRyTeAmS/3b",
    "aws_key_id": "AKIACANARY0123456789",
    "aws_session_key_id": "ASIACANARY0123456789",
    "gcp_api_key": "AIzaCaNaRy0123456789abcdefghijklmnopqrs",
    "stripe_secret": "sk_live_CaNaRy0123456789abcdef",
    "stripe_restricted": "rk_live_CaNaRy0123456789abcdef",
    "stripe_webhook_secret": "whsec_CaNaRy0123456789abcdefgh",
    "github_token": "ghp_CaNaRy0123456789abcdefghijklmnopqrst",
    "github_app_token": "ghs_CaNaRy0123456789abcdefghijklmnopqrst",
    "github_fine_grained": "github_pat_11CANARY0_CaNaRy0123456789abcdefghij",
    "gitlab_token": "glpat-CaNaRy0123456789abcd",
    "private_key_block": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAACaNaRy\n"
    "-----END OPENSSH PRIVATE KEY-----",
    "sentry_dsn": "https://0123456789abcdef0123456789abcdef@o42.ingest.sentry.io/4242",
    "sentry_org_token": "sntrys_CaNaRy0123456789abcdefghijklmnop",
    "sentry_user_token": "sntryu_0123456789abcdef0123456789abcdef",
    "posthog_project_key": "phc_CaNaRy0123456789abcdefghijklmnop",
    "posthog_personal_key": "phx_CaNaRy0123456789abcdefghijklmnop",
    "slack_bot_token": "xoxb-112233445566-CaNaRySlAcKbOt",
    "openai_key": "sk-proj-CaNaRy0123456789abcdefghij",
    "database_url": "postgres://app:CaNaRyDbPaSs@db.internal:5432/app",
    "redis_url": "redis://:CaNaRyReDiS@cache:6379/0",
}
SECRET_PART = re.compile(r"CaNaRy\w*|0123456789\w*|[A-Za-z0-9]{16,}")


@pytest.mark.parametrize(("kind", "credential"), sorted(CREDENTIALS.items()))
def test_credential_formats_are_recognised_by_value_under_a_harmless_key(kind: str, credential: str) -> None:
    for text in (credential, f"notify {credential} now", f'{{"notify_target": "{credential}"}}'):
        scrubbed = SCRUBBER.scrub_string(text)
        assert SCRUBBED in scrubbed
        for secret in SECRET_PART.findall(credential.split("://", 1)[-1]):
            if len(secret) >= 12 and secret not in ("ingest", "internal"):
                assert secret not in scrubbed, (kind, scrubbed)
    scrubbed_value, paths = SCRUBBER.scrub({"notify_webhook": credential, "note": [credential]})
    assert "CaNaRy" not in str(scrubbed_value) and paths == ["notify_webhook", "note[0]"]


def test_a_dsn_and_a_url_keep_their_host() -> None:
    assert SCRUBBER.scrub_string(CREDENTIALS["sentry_dsn"]) == f"https://{SCRUBBED}@o42.ingest.sentry.io/4242"
    assert SCRUBBER.scrub_string(CREDENTIALS["redis_url"]) == f"redis://{SCRUBBED}@cache:6379/0"


@pytest.mark.parametrize(
    "text",
    [
        "ASIA trip; AKIA is a word",  # too short for an access key id
        "see task_list_1 and my-sk-thing",
        "https://example.com/webhooks/docs",
        "-----BEGIN PUBLIC KEY-----",
        "http://host:8080/path",
        "pwdlib 0.2.1, tokenizers 0.19, secretstorage 3.3",
    ],
)
def test_lookalikes_are_left_alone(text: str) -> None:
    assert SCRUBBER.scrub_string(text) is text


def test_byte_strings_and_header_pairs_of_an_asgi_scope() -> None:
    scope = {
        "type": "http",
        "headers": [
            (b"host", b"api.example.com"),
            (b"authorization", b"Bearer canary-bearer-0001"),
            (b"cookie", b"sid=canary-cookie-0002; theme=dark"),
            (b"x-api-key", b"canary-apikey-0003"),
            (b"x-csrf-token", b"canary-csrf-0004"),
            (b"x-hub-signature-256", b"sha256=canary0005"),
            (b"stripe-signature", b"t=1,v1=canary0006"),
        ],
        "query_string": b"token=canary-query-0007&page=2",
        "body": b'{"email": "ann@example.com"}',
        "buffer": bytearray(b"password=canary-form-0008"),
        "view": memoryview(b"secret: canary-view-0009"),
    }
    scrubbed, paths = SCRUBBER.scrub({"scope": scope})
    assert "canary" not in repr(scrubbed) and "ann@example.com" not in repr(scrubbed)
    headers = scrubbed["scope"]["headers"]
    assert headers[0] == (b"host", b"api.example.com")
    assert headers[1] == (b"authorization", SCRUBBED.encode())
    assert type(scrubbed["scope"]["buffer"]) is bytearray
    assert scrubbed["scope"]["query_string"] == f"token={SCRUBBED}&page=2".encode()
    assert "scope.headers[1][1]" in paths and "scope.query_string" in paths
    clean = {"headers": [(b"host", b"h"), (b"accept", b"*/*")], "body": b"ok"}
    assert SCRUBBER.scrub(clean) == (clean, [])


def test_header_pairs_as_sentry_serialises_frame_variables() -> None:
    # sentry-sdk repr()s frame variables: bytes become "b'...'" strings, tuples lists
    frame_vars = {
        "scope": {"headers": [["b'cookie'", "b'sid=canary1'"], ["b'accept'", "b'*/*'"]]},
        "b'set-cookie'": "b'sid=canary2'",
        "headers": "Headers(raw=[(b'host', b'h'), (b'cookie', b'sid=canary3'), (b'x-api-key', b'canary4')])",
        "mapping": "Headers({'cookie': 'sid=canary5', 'authorization': 'Basic Y2FuYXJ5Ng=='})",
        "url": "URL('ws://h/ws?token=canary7')",
        "query_params": "QueryParams('api_key=canary8&email=ann%40example.com')",
    }
    scrubbed, _ = SCRUBBER.scrub(frame_vars)
    assert "canary" not in repr(scrubbed) and "Y2FuYXJ5Ng" not in repr(scrubbed) and "ann" not in repr(scrubbed)
    assert scrubbed["scope"]["headers"][1] == ["b'accept'", "b'*/*'"]


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        (
            "(sqlite3.IntegrityError) NOT NULL constraint failed: users.name\n"
            "[SQL: INSERT INTO users (id, token, n) VALUES (?, ?, ?)]\n"
            "[parameters: (None, 'canary-param-0001', 2)]\n"
            "(Background on this error at: https://sqlalche.me/e/20/gkpj)",
            "[SQL: INSERT INTO users (id, token, n) VALUES (?, ?, ?)]",
        ),
        (
            'duplicate key value violates unique constraint "users_email_key"\n'
            "DETAIL:  Key (email)=(canary-detail-0002) already exists.",
            "already exists.",
        ),
        ('null value in column "name"\nDETAIL:  Failing row contains (1, canary-row-0003, null).', "null value"),
        ("(1062, \"Duplicate entry 'canary-entry-0004' for key 'users.email'\")", "for key 'users.email'"),
    ],
)
def test_database_errors_lose_the_values_they_quote(message: str, kept: str) -> None:
    scrubbed = SCRUBBER.scrub_string(message)
    assert "canary" not in scrubbed and kept in scrubbed


@pytest.mark.parametrize(
    "text",
    [
        "/signup?email=ann.canary%40example.com&next=%2F",
        "/signup?email=ann.canary%2Btag%40example.com",
        '{"user": "ann.canary\\u0040example.com"}',
        '{\\"password\\": \\"canary-escaped\\", \\"x\\": 1}',
        "/login?next=%2Fa%3Fpassword%3Dcanary-nested%26x%3D1",
        "Authorization: Bearer+canary-plus-0001",
        "password%3Dcanary-encoded",
    ],
)
def test_encoded_forms_are_scrubbed_like_plain(text: str) -> None:
    assert "canary" not in SCRUBBER.scrub_string(text)


class _Counting:
    """A compiled pattern that counts the characters handed to it (the regex work of a call)."""

    def __init__(self, pattern: re.Pattern[str], counter: list[int]) -> None:
        self._pattern = pattern
        self._counter = counter

    def sub(self, replacement: Any, text: str) -> str:
        self._counter[0] += len(text)
        return self._pattern.sub(replacement, text)

    def search(self, text: str) -> re.Match[str] | None:
        self._counter[0] += len(text)
        return self._pattern.search(text)


def _counting_scrubber(
    monkeypatch: pytest.MonkeyPatch, config: ScrubbingConfig | None = None
) -> tuple[Scrubber, list[int]]:
    counter = [0]
    scrubber = Scrubber(config)
    scrubber._value_rules = tuple(  # type: ignore[assignment]
        (needles, _Counting(pattern, counter), replacement) for needles, pattern, replacement in scrubber._value_rules
    )
    scrubber._credentials = _Counting(scrubber._credentials, counter)  # type: ignore[assignment]
    monkeypatch.setattr(scrubbing, "_CARD_NUMBER", _Counting(scrubbing._CARD_NUMBER, counter))
    return scrubber, counter


PATHOLOGICAL = [
    "password" * 1000,
    "token" * 1600,
    "secret=" * 1100,
    "tokentoken:" * 700,
    "?token='" * 1000,
    '"password": "' * 600,
    "a%40" * 2000,
    "-----BEGIN RSA PRIVATE KEY-----" * 250,
    "Key (a)=(" * 900,
    "sk_live_" * 1000,
    "://a:b" * 1300,
]


@pytest.mark.parametrize("unit", PATHOLOGICAL, ids=range(len(PATHOLOGICAL)))
def test_work_grows_linearly_with_the_input(monkeypatch: pytest.MonkeyPatch, unit: str) -> None:
    # Timing-free: the regex work of a call is measured as the characters handed to the patterns;
    # a value 8x as long (or 8x as many values) costs at most 8x, and the result is the same shape.
    scrubber, counter = _counting_scrubber(monkeypatch)
    work = []
    for factor in (1, 8):
        counter[0] = 0
        scrubber.scrub({"tag": [unit * factor], "text": unit * factor})
        work.append(counter[0])
    assert 0 < work[1] <= 8 * work[0]


def test_a_call_has_a_bounded_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    scrubber, counter = _counting_scrubber(monkeypatch, ScrubbingConfig(max_chars_per_call=100_000))
    values = {f"v{index}": "password " * 500 for index in range(100)}  # 450 KB of clean long values
    scrubbed, paths = scrubber.scrub(values)
    per_string = counter[0] / 22  # every long string searched is handed to at most this many passes
    assert per_string <= 100_000 + 4500
    replaced = [key for key, value in scrubbed.items() if value == SCRUBBED]  # the rest: replaced whole
    assert len(replaced) >= 75 and paths == replaced
    assert all(scrubbed[key] == values[key] for key in scrubbed if key not in replaced)


def test_properties_cut_nested_strings_before_searching_them(monkeypatch: pytest.MonkeyPatch) -> None:
    scrubber, counter = _counting_scrubber(monkeypatch)
    long_value = "token " * 700  # 4,200 characters
    scrubbed, paths = scrubber.scrub_properties({"tags": [long_value] * 8, "nested": {"text": long_value}})
    assert scrubbed["tags"][0] == long_value[:MAX_STRING_CHARS] + "…"
    assert scrubbed["nested"]["text"].endswith("…") and len(scrubbed["nested"]["text"]) == MAX_STRING_CHARS + 1
    assert "tags[7]" in paths and "nested.text" in paths
    assert counter[0] <= 9 * MAX_STRING_CHARS * 22


def test_properties_work_is_bounded_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    # 4 MiB of 4,100-character values: cut to 4,096 each, and the call's budget bounds the rest
    scrubber, counter = _counting_scrubber(monkeypatch)
    properties = {f"p{index}": "password=" * 455 + "ab" for index in range(1024)}
    scrubbed, paths = scrubber.scrub_properties(properties)
    assert len(paths) == 1024
    assert counter[0] <= (scrubbing.MAX_SCRUB_CHARS + MAX_STRING_CHARS) * 22


@pytest.mark.timeout(60)
def test_pathological_megabytes_cost_linear_time() -> None:
    # Long runs of repeated sensitive words cost time quadratic in the run under a backtracking
    # pattern (a 1 MB run would take hours); the timeout guards against that complexity class, with
    # a wide margin, and is not a benchmark.
    scrubber = Scrubber()
    for unit in PATHOLOGICAL:
        text = unit * (1_000_000 // len(unit))
        assert isinstance(scrubber.scrub_string(text), str)


def test_a_pair_whose_name_is_itself_a_credential() -> None:
    # "...token..." reads as a sensitive name: the value goes, and the name is searched as a value
    token = "ghp_CaNaRyTOKEN0123456789abcdefghijklmnop"
    scrubbed, paths = SCRUBBER.scrub({"refs": [token, "main"], "other": [CREDENTIALS["github_token"], "main"]})
    assert scrubbed == {"refs": [f"ghp{SCRUBBED}", SCRUBBED], "other": [f"ghp{SCRUBBED}", "main"]}
    assert paths == ["refs[0]", "refs[1]", "other[0]"]
