"""Canaries, collector side: secrets and personal data in OTLP span attributes, span events and
event records that a foreign SDK (no scrubbing of its own) sends to the collector never reach
PostHog, in any form (plain, URL-encoded, JSON-escaped): the collector re-scrubs every property."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.fakes.posthog import FakePostHog
from tests.integration.collector.collector_process import CollectorProcess, wait_for
from tests.integration.instrumentation.test_canaries import (
    AWS_KEY_ID,
    BEARER,
    BODY_EMAIL,
    DATABASE_URL,
    DB_PASSWORD,
    DETAIL_EMAIL,
    DISCORD_WEBHOOK,
    GITHUB_TOKEN,
    GITLAB_TOKEN,
    JWT,
    OTHER_DSN,
    POSTHOG_PERSONAL_KEY,
    PRIVATE_KEY,
    PRIVATE_KEY_BODY,
    QUERY_EMAIL,
    QUERY_TOKEN,
    SENTRY_DSN_KEY,
    SESSION_COOKIE,
    SLACK_WEBHOOK,
    SQL_PARAMETER,
    STRIPE_KEY,
    forms,
)
from tests.unit.collector.otlp_builders import attributes, logs, record, span, traces

pytestmark = pytest.mark.integration

ESCAPED_EMAIL = BODY_EMAIL.replace("@", "\\u0040")

CANARIES = (
    AWS_KEY_ID,
    BEARER,
    BODY_EMAIL,
    DB_PASSWORD,
    DETAIL_EMAIL,
    DISCORD_WEBHOOK,
    GITHUB_TOKEN,
    GITLAB_TOKEN,
    JWT,
    POSTHOG_PERSONAL_KEY,
    PRIVATE_KEY_BODY,
    QUERY_EMAIL,
    QUERY_TOKEN,
    SENTRY_DSN_KEY,
    SESSION_COOKIE,
    SLACK_WEBHOOK,
    SQL_PARAMETER,
    STRIPE_KEY,
)


def _tagged_span(index: int) -> Span:
    url = f"https://api.example.com/v1/signup?contact={quote(QUERY_EMAIL, safe='')}&token={QUERY_TOKEN}"
    result = span(
        {
            "phonoglyph.operation": "account_creation",
            "user.id": f"u{index}",
            "http.url": url,
            "http.target": url.split("example.com", 1)[1],
            "http.request.header.authorization": f"Bearer {BEARER}",
            "http.request.header.cookie": f"sid={SESSION_COOKIE}",
            "notify_webhook": SLACK_WEBHOOK,
            "cloud.key_ref": AWS_KEY_ID,
            "repo.refs": [GITHUB_TOKEN, "main"],
            "db.target": DATABASE_URL,
            "request.note": f'{{"email": "{ESCAPED_EMAIL}"}}',
        },
        name="account_creation",
        span_id=uuid.uuid4().bytes[:8],
        error=True,
    )
    event = result.events.add()
    event.name = "exception"
    event.time_unix_nano = result.start_time_unix_nano
    event.attributes.extend(
        attributes(
            {
                "exception.type": "IntegrityError",
                "exception.message": f"DETAIL:  Key (email)=({DETAIL_EMAIL}) already exists.\n"
                f"[parameters: (None, '{SQL_PARAMETER}', 2)]",
                "billing.ref": STRIPE_KEY,
            }
        )
    )
    return result


def test_no_canary_reaches_posthog(tmp_path: Path) -> None:
    with (
        FakePostHog() as posthog,
        CollectorProcess(tmp_path, env={"POSTHOG_API_KEY": "phc_test", "POSTHOG_HOST": posthog.host}) as collector,
    ):
        spans = traces(*(_tagged_span(index) for index in range(3)))
        event_records = logs(
            record(
                "signup_started",
                {
                    "phonoglyph.event.id": str(uuid.uuid4()),
                    "user.id": "u1",
                    "deploy.ref": GITLAB_TOKEN,
                    "material": PRIVATE_KEY,
                    "jwt_note": JWT,
                    "partner.ref": POSTHOG_PERSONAL_KEY,
                    "chat": DISCORD_WEBHOOK,
                    "other_dsn": OTHER_DSN,
                    "nested": {"list": [f"password={DB_PASSWORD}", f"email {QUERY_EMAIL}"]},
                },
            )
        )
        for path, request in (("/v1/traces", spans), ("/v1/logs", event_records)):
            response = httpx.post(
                f"{collector.url}{path}",
                content=request.SerializeToString(),
                headers={"content-type": "application/x-protobuf"},
                timeout=30,
            )
            assert response.status_code == 200
        wait_for(lambda: len(set(posthog.uuids())) >= 4, message="4 events at the fake PostHog")
        delivered = json.dumps(posthog.events)
        assert "account_creation" in delivered and "signup_started" in delivered
        leaked = sorted(canary for canary in CANARIES if any(form in delivered for form in forms(canary)))
        assert leaked == []
        assert collector.stop() == 0
