"""Canaries: secrets and personal data planted in every place a request or span can carry them.

A FastAPI app under ``configure()`` (real sentry-sdk → the fake Sentry, real OTLP exporters → the
OTLP capture server) gets requests carrying distinct canaries in headers, cookies, the query string,
a JSON body (with JSON escapes), a form body, baggage, stack-frame locals (the ASGI scope with its
header pairs, raw bytes, a bytearray, Starlette's ``Headers``, a dependency's result), an exception
message quoting SQL parameters and a PostgreSQL ``DETAIL``, span attributes and events, event
records, breadcrumbs, and credentials in well-known formats under harmless keys. None of them, in
any form (plain, URL-encoded, JSON-escaped), may appear in any Sentry envelope or OTLP payload.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
import uvicorn
from fastapi import Cookie, Depends, FastAPI, Request
from opentelemetry import trace

from instrumentation import configure, instrument_fastapi, operation, shutdown, track
from tests.fakes.otlp import OtlpCapture
from tests.fakes.sentry import FakeSentry

pytestmark = pytest.mark.integration

# Made up for these tests, shaped like the real thing where a format is the point.
BEARER = "cnry01bearerTOKENvalue"
SESSION_COOKIE = "cnry02sessionCOOKIE"
API_KEY = "cnry03apiKEYheader"
CSRF = "cnry04csrfTOKEN"
WEBHOOK_SIGNATURE = "cnry05hubSIGNATURE"
QUERY_TOKEN = "cnry06queryTOKEN"
QUERY_EMAIL = "cnry07query@example.com"  # sent URL-encoded (%40)
BODY_PASSWORD = "cnry08bodyPASSWORD"
BODY_EMAIL = "cnry09escaped@example.com"  # sent JSON-escaped (\u0040)
FORM_PASSWORD = "cnry10formPASSWORD"
SQL_PARAMETER = "cnry11sqlPARAMETER"
DETAIL_EMAIL = "cnry12detail@example.com"
SLACK_WEBHOOK = "https://hooks.slack.com/services/T0CNRY13/B0CNRY13/cnry13slackHOOKsecret"
AWS_KEY_ID = "AKIACNRY14AWSKEY0000"
STRIPE_KEY = "sk_live_cnry15stripeSECRETkey"
GITHUB_TOKEN = "ghp_cnry16githubTOKEN0000000000000000000"
POSTHOG_PERSONAL_KEY = "phx_cnry17posthogPERSONALkey0000"
GITLAB_TOKEN = "glpat-cnry18gitlabTOKEN0000"
PRIVATE_KEY_BODY = "cnry19PRIVATEkeyBODY"
PRIVATE_KEY = f"-----BEGIN RSA PRIVATE KEY-----\nMIIE{PRIVATE_KEY_BODY}AAAA\n-----END RSA PRIVATE KEY-----"
SENTRY_DSN_KEY = "c0ffee20c0ffee20c0ffee20c0ffee20"
OTHER_DSN = f"https://{SENTRY_DSN_KEY}@o20.ingest.sentry.io/2020"
DB_PASSWORD = "cnry21dbPASSWORD"
DATABASE_URL = f"postgres://app:{DB_PASSWORD}@db.internal:5432/app"
DISCORD_WEBHOOK = "https://discord.com/api/webhooks/222222222222222222/cnry22discordHOOK"
ESCAPED_PASSWORD = "cnry23escapedPASSWORD"
BAGGAGE_KEY = "sntrys_cnry24sentryAUTHtoken0000000"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjbnJ5MjUifQ.cnry25jwtSIGNATURE"
LOCAL_SECRET = "cnry26bytesSECRET"

CANARIES = (
    BEARER,
    SESSION_COOKIE,
    API_KEY,
    CSRF,
    WEBHOOK_SIGNATURE,
    QUERY_TOKEN,
    QUERY_EMAIL,
    BODY_PASSWORD,
    BODY_EMAIL,
    FORM_PASSWORD,
    SQL_PARAMETER,
    DETAIL_EMAIL,
    SLACK_WEBHOOK,
    AWS_KEY_ID,
    STRIPE_KEY,
    GITHUB_TOKEN,
    POSTHOG_PERSONAL_KEY,
    GITLAB_TOKEN,
    PRIVATE_KEY_BODY,
    SENTRY_DSN_KEY,
    DB_PASSWORD,
    DISCORD_WEBHOOK,
    ESCAPED_PASSWORD,
    BAGGAGE_KEY,
    JWT,
    LOCAL_SECRET,
)

_app_logger = logging.getLogger("tests.canary_app")


class IntegrityError(Exception):
    """Shaped like SQLAlchemy's wrapping of a driver's error."""


def current_session(sid: Annotated[str | None, Cookie()] = None) -> str | None:
    return sid  # a dependency's result: a frame local that does not say it is a cookie


def _store(raw_body: bytes, payload: dict[str, Any]) -> None:
    buffer = bytearray(b"secret=" + LOCAL_SECRET.encode())  # frame locals: bytes, a bytearray
    dsn = DATABASE_URL
    raise IntegrityError(
        "(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "
        f'"users_email_key"\nDETAIL:  Key (email)=({DETAIL_EMAIL}) already exists.\n'
        "[SQL: INSERT INTO users (id, secret, n) VALUES (%(id)s, %(secret)s, %(n)s)]\n"
        f"[parameters: (None, '{SQL_PARAMETER}', 2)]\n"
        f"(Background on this error at: https://sqlalche.me/e/20/gkpj) {len(buffer)} {len(dsn)}"
    )


def _make_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/signup")
    async def signup(request: Request, session: Annotated[str | None, Depends(current_session)]) -> None:
        scope = request.scope  # the ASGI scope: headers as (bytes, bytes) pairs
        headers = request.headers  # Starlette's Headers: Sentry shows its repr
        raw_body = await request.body()
        payload = json.loads(raw_body)
        notify_webhook = SLACK_WEBHOOK
        span = trace.get_current_span()
        span.set_attribute("notify_webhook", notify_webhook)
        span.set_attribute("cloud.key_ref", AWS_KEY_ID)
        span.set_attribute("request.note", f'{{\\"password\\": \\"{ESCAPED_PASSWORD}\\"}}')
        span.add_event("billing.configured", {"provider.ref": STRIPE_KEY, "dsn_other": OTHER_DSN})
        _app_logger.warning("posting to %s", DISCORD_WEBHOOK)  # a breadcrumb
        with operation("account_creation", {"repo.ref": GITHUB_TOKEN, "db.target": DATABASE_URL}):
            track("signup_started", {"deploy.ref": GITLAB_TOKEN, "material": PRIVATE_KEY, "jwt_note": JWT})
            if scope and headers and session is not None:
                _store(raw_body, payload)

    @app.post("/v1/login")
    async def login(request: Request) -> None:
        form = await request.form()
        raise IntegrityError(f"[parameters: ('{form['password']}',)]")

    return app


class _Uvicorn:
    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-canaries", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.started, "uvicorn did not start"
        return f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def fake_sentry() -> Iterator[FakeSentry]:
    with FakeSentry() as server:
        yield server


@pytest.fixture
def served(
    fresh_otel: None, monkeypatch: pytest.MonkeyPatch, otlp: tuple[str, OtlpCapture], fake_sentry: FakeSentry
) -> Iterator[str]:
    for name in (
        "SENTRY_DSN",
        "SENTRY_ENVIRONMENT",
        "SENTRY_RELEASE",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
    ):
        monkeypatch.delenv(name, raising=False)
    endpoint, _ = otlp
    configure(service_name="api", environment="test", otlp_endpoint=endpoint, sentry_dsn=fake_sentry.dsn)
    with _Uvicorn(instrument_fastapi(_make_app())) as base_url:
        yield base_url


def forms(canary: str) -> set[str]:
    """The canary as it may be written: plain, URL-encoded, JSON-escaped."""
    return {
        canary,
        quote(canary, safe=""),
        quote_plus(canary),
        json.dumps(canary)[1:-1],
        canary.replace("@", "\\u0040"),
    }


def leaks(text: str) -> list[str]:
    return sorted(canary for canary in CANARIES if any(form in text for form in forms(canary)))


def _error_events(fake_sentry: FakeSentry) -> list[dict[str, Any]]:
    return [
        event
        for event in fake_sentry.events
        if any(value.get("type") == "IntegrityError" for value in event.get("exception", {}).get("values", []))
    ]


def test_no_canary_reaches_sentry_or_the_collector(
    served: str, fake_sentry: FakeSentry, otlp: tuple[str, OtlpCapture]
) -> None:
    _, capture = otlp
    body = json.dumps({"password": BODY_PASSWORD, "email": BODY_EMAIL, "plan": "pro"}).replace("@", "\\u0040")
    response = httpx.post(
        f"{served}/v1/signup?token={QUERY_TOKEN}&contact={quote(QUERY_EMAIL, safe='')}",
        content=body.encode(),
        headers={
            "content-type": "application/json",
            "authorization": f"Bearer {BEARER}",
            "cookie": f"sid={SESSION_COOKIE}; theme=dark",
            "x-api-key": API_KEY,
            "x-csrf-token": CSRF,
            "x-hub-signature-256": f"sha256={WEBHOOK_SIGNATURE}",
            "baggage": f"promo.ref={BAGGAGE_KEY},plan=pro",
        },
        timeout=10,
    )
    assert response.status_code == 500
    form_response = httpx.post(
        f"{served}/v1/login",
        data={"username": "ann", "password": FORM_PASSWORD},
        headers={"authorization": f"Bearer {JWT}"},
        timeout=10,
    )
    assert form_response.status_code == 500

    assert capture.wait_for(lambda c: sum(span["kind"] == "SERVER" for span in c.spans) >= 2)
    assert capture.wait_for(lambda c: any(r["event_name"] == "signup_started" for r in c.log_records))
    assert fake_sentry.wait_for(lambda s: len(_error_events(s)) >= 2)
    shutdown()

    # the canaries were there to find: the error events carry frames with local variables
    events = _error_events(fake_sentry)
    frames = [
        frame for event in events for value in event["exception"]["values"] for frame in value["stacktrace"]["frames"]
    ]
    assert any("scope" in frame.get("vars", {}) for frame in frames)
    assert any(frame.get("function") == "_store" and "buffer" in frame.get("vars", {}) for frame in frames)
    snapshot = capture.snapshot()
    signup_span = next(span for span in snapshot["spans"] if span["name"] == "POST /v1/signup")
    assert "attributes.notify_webhook" in signup_span["attributes"]["phonoglyph.scrubbed"]

    sentry_text = fake_sentry.received_bytes().decode("utf-8", "replace")
    assert leaks(sentry_text) == []
    assert leaks(repr(fake_sentry.events)) == []
    assert leaks(repr(fake_sentry.spans)) == []
    assert leaks(repr(snapshot)) == []
    assert fake_sentry.errors == [] and snapshot["errors"] == []
