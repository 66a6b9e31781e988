"""Hostile and foreign input against the api: a caller cannot forge an identity, a browser's session
joins the backend's, tokens expire and are revoked, and a bad billing webhook is a 400, never a 500.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from typing import Any

import httpx
import pytest

from instrumentation import semconv
from instrumentation.testing import capture
from services.api import create_app
from services.billing import SIGNATURE_HEADER, sign
from services.settings import ServiceSettings
from tests.fakes.sentry import FakeSentry
from tests.integration.services.conftest import BILLING_SECRET, Api, api_client

pytestmark = pytest.mark.integration
CLOSE = {"Connection": "close"}  # uvicorn drops the connection after an error left the app


def _server_span(api: Api, method: str, path: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """The one server span of that request (it ends just after the response is sent: poll for it)."""
    deadline_s = time.monotonic() + timeout_s
    while True:
        matches = [s for s in api.spans(**{"http.request.method": method, "url.path": path}) if s["kind"] == "SERVER"]
        if matches or time.monotonic() > deadline_s:
            break
        time.sleep(0.02)
    assert len(matches) == 1, matches
    return matches[0]


# -- trust rule -----------------------------------------------------------------------------------
def test_an_unauthenticated_request_with_a_forged_user_in_its_baggage_is_nobody(api: Api) -> None:
    _headers, victim = api.member()
    forged = {"baggage": f"user.id={victim['user_id']},phonoglyph.user.guest=false"}
    answer = api.client.get("/users/me", headers=forged)
    assert (answer.status_code, answer.json()["error"]["code"]) == (401, "unauthorized")
    attributes = _server_span(api, "GET", "/users/me")["attributes"]
    assert semconv.USER_ID not in attributes and semconv.USER_GUEST not in attributes


def test_a_forged_user_never_reaches_sentry_with_a_server_error(settings: ServiceSettings) -> None:
    unconfigured = dataclasses.replace(settings, billing_secret=None)  # the webhook answers 503
    with FakeSentry() as sentry, capture(service_name="phonoglyph-api", sentry_dsn=sentry.dsn) as captured:
        app = create_app(unconfigured)
        with api_client(app) as client:
            api = Api(client, captured, unconfigured, app.state.db)
            answer = client.post("/billing/webhook", content=b"{}", headers={"baggage": "user.id=u_victim", **CLOSE})
            assert answer.status_code == 503
            assert answer.headers["content-type"] == "application/json"
            assert answer.json()["error"]["code"] == "billing_not_configured"
            span = _server_span(api, "POST", "/billing/webhook")
            assert sentry.wait_for(lambda fake: len(fake.events) >= 1)
    (event,) = sentry.events
    assert "u_victim" not in json.dumps(event.get("user", {}))
    assert semconv.USER_ID not in span["attributes"]


def test_the_job_of_an_authenticated_request_carries_its_own_user_to_the_worker(api: Api) -> None:
    headers, member = api.member()
    file_id = api.upload(headers, api.project(headers)).json()["file_id"]
    browser = {"baggage": "user.id=u_forged,session.id=s_browser", "x-posthog-distinct-id": "ph_anon"}
    assert api.client.post(f"/files/{file_id}/analysis", headers={**headers, **browser}).status_code == 202
    assert api.run_worker() == 1
    (job_span,) = api.spans(**{semconv.OPERATION: "audio_analysis"})
    attributes = job_span["attributes"]
    assert (attributes[semconv.USER_ID], attributes[semconv.SESSION_ID]) == (member["user_id"], "s_browser")


# -- session rule ---------------------------------------------------------------------------------
def test_an_authenticated_request_joins_the_browsers_session(api: Api) -> None:
    headers, member = api.member()
    answer = api.client.post("/projects", json={"name": "p"}, headers={**headers, "baggage": "session.id=s_browser"})
    assert answer.status_code == 201
    (created,) = api.events("project_created")
    identity = (created["attributes"][semconv.USER_ID], created["attributes"][semconv.SESSION_ID])
    assert identity == (member["user_id"], "s_browser")


def test_posthog_js_tracing_headers_name_the_session_and_the_anonymous_person(api: Api) -> None:
    posthog = {"X-POSTHOG-SESSION-ID": "0190-session", "X-POSTHOG-DISTINCT-ID": "0190-anon"}
    assert api.client.get("/credits", headers=posthog).status_code == 401
    attributes = _server_span(api, "GET", "/credits")["attributes"]
    assert (attributes[semconv.USER_ID], attributes[semconv.SESSION_ID]) == ("0190-anon", "0190-session")
    assert attributes[semconv.USER_GUEST] is True

    guest = api.guest()
    me = api.client.get("/users/me", headers={**guest, **posthog}).json()
    attributes = _server_span(api, "GET", "/users/me")["attributes"]
    assert (attributes[semconv.USER_ID], attributes[semconv.SESSION_ID]) == (me["user_id"], "0190-session")
    assert me["session_id"] != "0190-session"  # the server's own session stays the credential's


# -- tokens ---------------------------------------------------------------------------------------
def test_sign_up_revokes_the_guest_token(api: Api) -> None:
    guest = api.guest()
    assert api.client.post("/auth/signup", json={"email": "g@example.test"}, headers=guest).status_code == 201
    answer = api.client.get("/users/me", headers=guest)
    assert (answer.status_code, answer.json()["error"]["code"]) == (401, "unauthorized")
    again = api.client.post("/auth/signup", json={"email": "other@example.test"}, headers=guest)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "already_signed_up")


def test_a_credential_that_no_longer_works_never_signs_up_a_new_account(api: Api) -> None:
    answer = api.client.post("/auth/signup", json={"email": "x@example.test"}, headers={"X-Guest-Session": "pgs_no"})
    assert answer.status_code == 401
    assert api.db.read().execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0


def _sign_up(
    api: Api, guest: dict[str, str], email: str, barrier: threading.Barrier, answers: dict[str, httpx.Response]
) -> None:
    with httpx.Client(base_url=str(api.client.base_url), timeout=10.0) as client:
        barrier.wait(5)
        answers[email] = client.post("/auth/signup", json={"email": email}, headers=guest)


def test_two_concurrent_sign_ups_of_one_guest_one_wins_the_other_conflicts(api: Api) -> None:
    for round_ in range(4):
        guest = api.guest()
        barrier = threading.Barrier(2)
        answers: dict[str, httpx.Response] = {}
        emails = [f"a{round_}@example.test", f"b{round_}@example.test"]
        threads = [threading.Thread(target=_sign_up, args=(api, guest, email, barrier, answers)) for email in emails]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
        assert sorted(answer.status_code for answer in answers.values()) == [201, 409]
        (winner,) = [email for email, answer in answers.items() if answer.status_code == 201]
        (loser,) = [answer for answer in answers.values() if answer.status_code == 409]
        assert loser.json()["error"]["code"] == "already_signed_up"
        stored = api.db.read().execute("SELECT email FROM users WHERE email IN (?, ?)", emails).fetchall()
        assert [row[0] for row in stored] == [winner]


def test_an_api_token_expires_and_can_be_revoked(api: Api) -> None:
    headers, _member = api.member()
    second = api.client.post("/auth/tokens", headers=headers).json()["token"]
    api.db.read().execute("UPDATE credentials SET expires_at = ? WHERE kind = 'api_token'", (time.time() - 1,))
    assert api.client.get("/users/me", headers=headers).status_code == 401
    assert api.client.get("/users/me", headers={"Authorization": f"Bearer {second}"}).status_code == 401

    fresh, _member = api.member("fresh@example.test")
    assert api.client.delete("/auth/tokens/current", headers=fresh).status_code == 204
    assert api.client.get("/users/me", headers=fresh).status_code == 401


def test_token_lifetimes_come_from_the_settings(settings: ServiceSettings) -> None:
    short = dataclasses.replace(settings, api_token_ttl_s=60.0, guest_token_ttl_s=30.0)
    with capture(service_name="phonoglyph-api") as captured:
        app = create_app(short)
        with api_client(app) as client:
            api = Api(client, captured, short, app.state.db)
            api.guest()
            api.member()
    rows = app.state.db.read().execute("SELECT kind, expires_at - created_at FROM credentials").fetchall()
    assert sorted((kind, round(ttl_s)) for kind, ttl_s in rows) == [("api_token", 60), ("guest_session", 30)]


# -- billing webhook ------------------------------------------------------------------------------
def _purchase_body(user_id: str, amount: str) -> bytes:
    data = f'{{"user_id": "{user_id}", "credits": 5, "amount_cents": {amount}, "currency": "EUR"}}'
    return f'{{"id": "evt_x", "type": "credits.purchased", "data": {data}}}'.encode()


@pytest.mark.parametrize(
    "case", ["1e400", str(10**30), "-1", "NaN", "Infinity", "9" * 5000, "deeply_nested", "deeply_nested_object"]
)
def test_a_signed_webhook_with_out_of_range_or_nested_values_is_a_400(api: Api, case: str) -> None:
    headers, member = api.member()
    if case == "deeply_nested":
        body = b"[" * 30_000 + b"]" * 30_000
    elif case == "deeply_nested_object":
        body = _purchase_body(member["user_id"], "1").replace(
            b'"EUR"', b'"EUR", "x": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000
        )
    else:
        body = _purchase_body(member["user_id"], case)
    answer = api.client.post(
        "/billing/webhook",
        content=body,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, BILLING_SECRET), **CLOSE},
    )
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"]["code"] == "invalid_payload"
    assert api.client.get("/credits", headers=headers).json()["balance"] == api.settings.signup_credits
