"""Real sentry-sdk → the fake Sentry over HTTP, real OTLP exporters → the OTLP capture server.

A FastAPI app served by uvicorn on 127.0.0.1 gets requests seeded with secrets in every place the
policy covers (bearer token, JWT, card number, e-mail, ``?token=``, a password form field, a cookie,
a stack-frame local named ``password``, a breadcrumb, an exception message). None of them may
appear in any byte the fake Sentry received (envelopes and OTLP) nor in what the OTLP capture
server decoded, while the error event still carries the request's trace id, tag ``operation``,
context ``audio_processing`` and the user id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest
import sentry_sdk
import uvicorn
from fastapi import FastAPI, Request
from opentelemetry import propagate

from instrumentation import Identity, configure, instrument_fastapi, operation, semconv, shutdown, track
from instrumentation._internal.sentry import spans as sentry_span_path
from instrumentation._internal.setup import force_flush
from instrumentation.testing import pipeline_stats
from tests.fakes.otlp import OtlpCapture
from tests.fakes.sentry import FakeSentry

pytestmark = pytest.mark.integration

TRACE_ID = "5f0c0ffee0ddba11c0ffee0ddba11c0f"
PARENT_SPAN_ID = "b7ad6b7169203331"
BEARER = "brr_SEED_8c1f2a9d7e"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJTRUVEIn0.c2VlZC1zaWduYXR1cmUtU0VFRA"
CARD = "4111 1111 1111 1111"
EMAIL = "seed.user@example.com"
QUERY_TOKEN = "tok_SEED_77aa31"
PASSWORD = "pw_SEED_hunter2"
COOKIE = "ck_SEED_c00k1e"
BREADCRUMB_TOKEN = "bc_SEED_51f0"
SEEDS = (BEARER, JWT, CARD, CARD.replace(" ", ""), EMAIL, QUERY_TOKEN, PASSWORD, COOKIE, BREADCRUMB_TOKEN, "SEED")

_app_logger = logging.getLogger("tests.phonoglyph_app")


class AccountError(ValueError):
    pass


def _check_account(password: str, payload: Mapping[str, Any]) -> None:
    # ``password`` is a stack-frame local Sentry would report
    if password:
        raise AccountError(f"no account for {payload['email']}")


def _identify(scope: Mapping[str, Any]) -> Identity | None:
    headers = dict(scope["headers"])
    user_id = headers.get(b"x-user-id")
    if user_id is None:
        return None
    return Identity(user_id=user_id.decode(), session_id=headers.get(b"x-session-id", b"").decode() or None)


def _make_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/files/{file_id}/separate")
    async def separate(file_id: str, request: Request) -> dict[str, str]:
        payload = await request.json()
        password = payload["password"]
        token = request.query_params["token"]
        _app_logger.warning("fetching stems with token=%s", BREADCRUMB_TOKEN)  # a breadcrumb
        with operation(
            "stem_separation",
            {semconv.FILE_ID: file_id, "source.url": f"https://cdn.example/{file_id}.wav?token={token}"},
        ) as span:
            span.set_attribute(semconv.AUDIO_DURATION_S, 12.5)
            span.set_attribute(semconv.AUDIO_SAMPLE_RATE_HZ, 44100)
            track("file_uploaded", {semconv.FILE_ID: file_id, "uploader": payload["email"]})
            _check_account(password, payload)
        return {"status": "separated"}

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("plain failure in a route")

    @app.get("/v1/logged")
    async def logged() -> dict[str, str]:
        try:
            raise LookupError(f"render queue rejected {EMAIL}")
        except LookupError:
            _app_logger.exception("render failed for %s", EMAIL)  # Sentry's logging integration: an event
        return {"status": "degraded"}

    @app.get("/v1/chatty")
    async def chatty() -> dict[str, str]:
        _app_logger.warning("chatty request for another user")  # a breadcrumb of this request only
        return {"status": "ok"}

    @app.get("/v1/carrier")
    async def carrier() -> dict[str, str]:
        headers: dict[str, str] = {}
        propagate.inject(headers)
        return headers

    return app


class _Uvicorn:
    """uvicorn serving ``app`` on 127.0.0.1:<free port> in a thread."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.started, "uvicorn did not start"
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def fake_sentry() -> Iterator[FakeSentry]:
    with FakeSentry() as server:
        yield server


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    names = ("SENTRY_DSN", "SENTRY_ENVIRONMENT", "SENTRY_RELEASE", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG")
    for name in names:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def served(fresh_otel: None, clean_env: None, otlp: tuple[str, OtlpCapture], fake_sentry: FakeSentry) -> Iterator[str]:
    endpoint, _ = otlp
    configure(service_name="api", environment="test", otlp_endpoint=endpoint, sentry_dsn=fake_sentry.dsn)
    app = instrument_fastapi(_make_app(), identify_request=_identify)
    with _Uvicorn(app) as base_url:
        yield base_url


def _seeded_request(base_url: str, headers: Mapping[str, str]) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/files/f_1/separate",
        params={"token": QUERY_TOKEN, "page": "1"},
        json={"password": PASSWORD, "email": EMAIL, "comment": JWT, "memo": f"card {CARD}"},
        headers={
            "Authorization": f"Bearer {BEARER}",
            "Cookie": f"sessionid={COOKIE}; theme=dark",
            "X-User-Id": "u_42",
            "X-Session-Id": "s_42",
            **headers,
        },
        timeout=10,
    )


def _finish(capture: OtlpCapture, fake_sentry: FakeSentry | None, exception_type: str | None) -> None:
    """The client has its 500 before the server side ends (the server span, Sentry's capture): wait
    for both, then shut down (flushes the queues and Sentry)."""
    assert capture.wait_for(lambda c: any(span["kind"] == "SERVER" for span in c.spans))
    if fake_sentry is not None and exception_type is not None:
        assert fake_sentry.wait_for(lambda s: bool(_error_events(s, exception_type)))
    shutdown()


def _error_events(fake_sentry: FakeSentry, exception_type: str) -> list[dict[str, Any]]:
    return [
        event
        for event in fake_sentry.events
        if any(value.get("type") == exception_type for value in event.get("exception", {}).get("values", []))
    ]


def _assert_no_seed_left(fake_sentry: FakeSentry, capture: OtlpCapture) -> None:
    sentry_bytes = fake_sentry.received_bytes()
    collector_text = repr(capture.snapshot())
    leaks = [seed for seed in SEEDS if seed.encode() in sentry_bytes or seed in collector_text]
    assert leaks == []


def test_seeded_secrets_never_leave_and_the_error_keeps_its_context(
    served: str, fake_sentry: FakeSentry, otlp: tuple[str, OtlpCapture]
) -> None:
    _, capture = otlp
    response = _seeded_request(served, {"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"})
    assert response.status_code == 500
    _finish(capture, fake_sentry, "AccountError")

    (event,) = _error_events(fake_sentry, "AccountError")
    assert event["contexts"]["trace"]["trace_id"] == TRACE_ID
    assert event["tags"]["operation"] == "stem_separation"
    assert event["contexts"]["audio_processing"] == {
        "operation": "stem_separation",
        semconv.FILE_ID: "f_1",
        semconv.AUDIO_DURATION_S: 12.5,
        semconv.AUDIO_SAMPLE_RATE_HZ: 44100,
    }
    assert event["user"]["id"] == "u_42"
    assert event["exception"]["values"][-1]["value"] == "no account for [Scrubbed]"
    frames = event["exception"]["values"][-1]["stacktrace"]["frames"]
    assert frames[-1]["function"] == "_check_account"
    assert frames[-1]["vars"]["password"] in ("[Scrubbed]", "[Filtered]")
    scrubbed_paths = event["extra"]["phonoglyph.scrubbed"]  # paths, never values
    assert {"request.query_string", "request.headers.authorization", "request.data.password"} <= set(scrubbed_paths)
    assert not any(path.startswith("_meta") for path in scrubbed_paths)
    assert any("fetching stems with token=" in (crumb.get("message") or "") for crumb in event["breadcrumbs"]["values"])
    # reported by our request-error handler (sentry-sdk's Starlette/FastAPI integrations are off),
    # with what those integrations attach
    assert event["exception"]["values"][-1]["mechanism"] == {"type": "phonoglyph.asgi", "handled": False}
    assert event["transaction"] == "/v1/files/{file_id}/separate"
    request = event["request"]
    assert (request["method"], request["url"]) == ("POST", f"{served}/v1/files/f_1/separate")
    assert request["query_string"] == "token=[Scrubbed]&page=1"
    assert request["headers"]["x-user-id"] == "u_42"
    assert request["headers"]["authorization"] == request["headers"]["cookie"] == "[Scrubbed]"
    assert request["data"] == {
        "password": "[Scrubbed]",
        "email": "[Scrubbed]",
        "comment": "[Scrubbed]",
        "memo": "card [Scrubbed]",
    }
    assert "cookies" not in request  # only with send_default_pii, as sentry-sdk does

    # spans reached Sentry's OTLP endpoint, scrubbed, in the request's trace
    sentry_spans = {span["name"]: span for span in fake_sentry.spans}
    assert sentry_spans["stem_separation"]["trace_id"] == TRACE_ID
    assert sentry_spans["POST /v1/files/{file_id}/separate"]["parent_span_id"] == PARENT_SPAN_ID
    assert sentry_spans["stem_separation"]["attributes"]["source.url"] == "https://cdn.example/f_1.wav?token=[Scrubbed]"
    assert "attributes.source.url" in sentry_spans["stem_separation"]["attributes"]["phonoglyph.scrubbed"]

    # the same scrubbed spans and event records reached the collector
    assert capture.wait_for(lambda c: any(r["event_name"] == "file_uploaded" for r in c.log_records))
    snapshot = capture.snapshot()
    assert {span["name"] for span in snapshot["spans"]} >= set(sentry_spans)
    (uploaded,) = [r for r in snapshot["log_records"] if r["event_name"] == "file_uploaded"]
    assert uploaded["attributes"]["uploader"] == "[Scrubbed]"
    assert uploaded["attributes"][semconv.USER_ID] == "u_42"

    # the OTel sampler is the only sampling decision: Sentry makes no transactions of its own
    item_types = {headers["type"] for envelope in fake_sentry.envelopes for headers, _ in envelope.items}
    assert "transaction" not in item_types and "event" in item_types

    assert fake_sentry.errors == [] and snapshot["errors"] == []
    _assert_no_seed_left(fake_sentry, capture)


def test_a_route_error_outside_any_operation_carries_the_server_spans_trace(
    served: str, fake_sentry: FakeSentry, otlp: tuple[str, OtlpCapture]
) -> None:
    _, capture = otlp
    response = httpx.get(f"{served}/v1/boom", headers={"X-User-Id": "u_7"}, timeout=10)
    assert response.status_code == 500
    _finish(capture, fake_sentry, "RuntimeError")
    (event,) = _error_events(fake_sentry, "RuntimeError")
    (server_span,) = [span for span in capture.snapshot()["spans"] if span["kind"] == "SERVER"]
    assert event["contexts"]["trace"]["trace_id"] == server_span["trace_id"]
    assert event["user"]["id"] == "u_7"
    assert "operation" not in event.get("tags", {})


def test_one_requests_breadcrumbs_never_reach_another_requests_error(
    served: str, fake_sentry: FakeSentry, otlp: tuple[str, OtlpCapture]
) -> None:
    assert httpx.get(f"{served}/v1/chatty", headers={"X-User-Id": "u_other"}, timeout=10).status_code == 200
    assert httpx.get(f"{served}/v1/boom", headers={"X-User-Id": "u_7"}, timeout=10).status_code == 500
    _finish(otlp[1], fake_sentry, "RuntimeError")
    (event,) = _error_events(fake_sentry, "RuntimeError")
    messages = [crumb.get("message") or "" for crumb in event.get("breadcrumbs", {}).get("values", [])]
    assert not any("chatty request" in message for message in messages), messages


def test_a_logged_error_inside_a_request_carries_its_trace_and_is_scrubbed(
    served: str, fake_sentry: FakeSentry, otlp: tuple[str, OtlpCapture]
) -> None:
    _, capture = otlp
    response = httpx.get(f"{served}/v1/logged", headers={"X-User-Id": "u_8"}, timeout=10)
    assert response.status_code == 200
    _finish(capture, fake_sentry, "LookupError")
    (event,) = _error_events(fake_sentry, "LookupError")
    (server_span,) = [span for span in capture.snapshot()["spans"] if span["kind"] == "SERVER"]
    assert event["contexts"]["trace"]["trace_id"] == server_span["trace_id"]
    assert event["user"]["id"] == "u_8"
    assert event["logentry"]["formatted"] == "render failed for [Scrubbed]"
    _assert_no_seed_left(fake_sentry, capture)


def test_incoming_sentry_trace_is_honoured_and_outgoing_calls_carry_w3c_headers(
    served: str, fake_sentry: FakeSentry, otlp: tuple[str, OtlpCapture]
) -> None:
    response = httpx.get(
        f"{served}/v1/carrier",
        headers={"sentry-trace": f"{TRACE_ID}-{PARENT_SPAN_ID}-1", "X-User-Id": "u_3"},
        timeout=10,
    )
    assert response.status_code == 200
    injected = response.json()
    assert injected["traceparent"].startswith(f"00-{TRACE_ID}-")
    assert injected["sentry-trace"].startswith(f"{TRACE_ID}-")
    assert "user.id=u_3" in injected["baggage"]
    _finish(otlp[1], None, None)
    (server_span,) = [span for span in fake_sentry.spans if span["name"] == "GET /v1/carrier"]
    assert (server_span["trace_id"], server_span["parent_span_id"]) == (TRACE_ID, PARENT_SPAN_ID)


def test_without_a_dsn_nothing_is_sent_and_nothing_logs(
    fresh_otel: None,
    clean_env: None,
    otlp: tuple[str, OtlpCapture],
    fake_sentry: FakeSentry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint, capture = otlp
    with caplog.at_level(logging.DEBUG):
        configure(service_name="api", otlp_endpoint=endpoint)
        app = instrument_fastapi(_make_app(), identify_request=_identify)
        with _Uvicorn(app) as base_url:
            assert _seeded_request(base_url, {}).status_code == 500
            _finish(capture, None, None)
    assert not sentry_sdk.get_client().is_active()
    assert fake_sentry.events == [] and fake_sentry.spans == [] and fake_sentry.errors == []
    ours = [r for r in caplog.records if r.name.startswith(("instrumentation", "sentry_sdk"))]
    assert ours == []
    assert any(span["name"] == "stem_separation" for span in capture.snapshot()["spans"])
    _assert_no_seed_left(fake_sentry, capture)


def test_an_unreachable_sentry_changes_nothing_for_the_app_but_counters(
    fresh_otel: None, clean_env: None, otlp: tuple[str, OtlpCapture]
) -> None:
    endpoint, capture = otlp
    with FakeSentry() as stopped:
        dsn = stopped.dsn  # nothing listens there any more once the block ends
    configure(service_name="worker", otlp_endpoint=endpoint, sentry_dsn=dsn)
    for _ in range(3):
        with pytest.raises(AccountError):
            with operation("render", {semconv.RENDER_ID: "r_1"}):
                raise AccountError("render failed")
    assert capture.wait_for(lambda c: len([s for s in c.spans if s["name"] == "render"]) == 3)
    shutdown()
    assert pipeline_stats().get("sentry_span_requests_export_failures", 0) >= 1  # the Sentry OTLP path, counted
    assert capture.snapshot()["errors"] == []


def test_the_pipelines_own_error_lines_never_become_sentry_events(
    fresh_otel: None, clean_env: None, otlp: tuple[str, OtlpCapture], fake_sentry: FakeSentry
) -> None:
    endpoint, _ = otlp
    configure(service_name="worker", otlp_endpoint=endpoint, sentry_dsn=fake_sentry.dsn)
    # what an unreachable collector makes the OTLP exporter and the export queue log
    logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter").error(
        "Failed to export spans batch due to timeout, max retries or shutdown."
    )
    logging.getLogger("instrumentation._internal.batching").error("exporting 3 spans failed")
    _app_logger.error("the app's own error")
    shutdown()
    assert [event["logentry"]["formatted"] for event in fake_sentry.events] == ["the app's own error"]


def test_the_collectors_otlp_headers_and_tls_settings_never_go_to_sentry(
    fresh_otel: None,
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    otlp: tuple[str, OtlpCapture],
    fake_sentry: FakeSentry,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer collector_SEED_7f,X-Tenant=t1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/collector-ca.pem")
    endpoint, capture = otlp
    configure(service_name="worker", otlp_endpoint=endpoint, sentry_dsn=fake_sentry.dsn)
    (path,) = sentry_span_path.active_span_paths()
    assert isinstance(path, sentry_span_path.PayloadPath)  # the collector's encoded bodies, sent as they are
    transport = path.exporter._client._transport
    assert transport._verify not in (False, "/etc/collector-ca.pem") and transport._cert is None
    with operation("render", {semconv.RENDER_ID: "r_1"}):
        pass
    shutdown()
    assert [span["name"] for span in fake_sentry.spans] == ["render"]
    (otlp_headers,) = [headers for path, headers in fake_sentry.request_headers if "/otlp/" in path]
    assert "authorization" not in otlp_headers and "x-tenant" not in otlp_headers
    assert otlp_headers["x-sentry-auth"].startswith(f"Sentry sentry_key={fake_sentry.key},")
    # the collector still gets its own headers
    (collector_request,) = [r for r in capture.snapshot()["requests"] if r["path"] == "/v1/traces"]
    collector_headers = {name.lower(): value for name, value in collector_request["headers"].items()}
    assert collector_headers["authorization"] == "Bearer collector_SEED_7f"


def test_with_sentry_spans_off_errors_still_reach_sentry_and_spans_only_the_collector(
    fresh_otel: None,
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    otlp: tuple[str, OtlpCapture],
    fake_sentry: FakeSentry,
) -> None:
    monkeypatch.setenv("PHONOGLYPH_SENTRY_SPANS", "off")  # a Collector forwards the traces to Sentry
    endpoint, capture = otlp
    configure(service_name="api", otlp_endpoint=endpoint, sentry_dsn=fake_sentry.dsn)
    app = instrument_fastapi(_make_app(), identify_request=_identify)
    with _Uvicorn(app) as base_url:
        assert httpx.get(f"{base_url}/v1/boom", headers={"X-User-Id": "u_5"}, timeout=10).status_code == 500
        _finish(capture, fake_sentry, "RuntimeError")
    (event,) = _error_events(fake_sentry, "RuntimeError")
    (server_span,) = [span for span in capture.snapshot()["spans"] if span["kind"] == "SERVER"]
    assert event["contexts"]["trace"]["trace_id"] == server_span["trace_id"]
    assert (event["transaction"], event["user"]["id"]) == ("/v1/boom", "u_5")
    assert fake_sentry.spans == []
    assert not [path for path, _ in fake_sentry.request_headers if "/otlp/" in path]
    assert fake_sentry.errors == []


def _app_with_a_failing_middleware() -> FastAPI:
    """HTTPExceptions raised outside the route (a middleware): Starlette's exception handler never
    sees them, so they leave the app; a route's own HTTPException is answered inside it."""
    from fastapi import HTTPException
    from starlette.middleware.base import BaseHTTPMiddleware

    app = FastAPI()

    async def gate(request: Request, call_next: Any) -> Any:
        status = int(request.query_params.get("status", "0"))
        if status:
            raise HTTPException(status_code=status, detail=f"gate says {status}")
        return await call_next(request)

    app.add_middleware(BaseHTTPMiddleware, dispatch=gate)

    @app.get("/v1/gated")
    async def gated(status: int = 0) -> dict[str, str]:
        return {"status": "open"}

    @app.get("/v1/missing")
    async def missing() -> None:
        raise HTTPException(status_code=503, detail="handled by the route")

    return app


def test_http_exceptions_below_500_that_leave_the_app_are_not_reported(
    fresh_otel: None, clean_env: None, otlp: tuple[str, OtlpCapture], fake_sentry: FakeSentry
) -> None:
    endpoint, capture = otlp
    configure(service_name="api", otlp_endpoint=endpoint, sentry_dsn=fake_sentry.dsn)
    app = instrument_fastapi(_app_with_a_failing_middleware())
    with _Uvicorn(app) as base_url:
        statuses = [
            httpx.get(f"{base_url}/v1/gated", params={"status": status}, headers={"Connection": "close"}, timeout=10)
            for status in (403, 404, 429, 503)
        ]
        assert [answer.status_code for answer in statuses] == [500] * 4  # ServerErrorMiddleware's answer
        assert httpx.get(f"{base_url}/v1/missing", timeout=10).status_code == 503
    # uvicorn has finished every request (and logged what left the app: Sentry's logging integration)
    shutdown()
    assert len([s for s in capture.snapshot()["spans"] if s["kind"] == "SERVER"]) == 5
    (event,) = _error_events(fake_sentry, "HTTPException")
    assert event["exception"]["values"][-1]["value"] == "gate says 503"
    assert event["exception"]["values"][-1]["mechanism"] == {"type": "phonoglyph.asgi", "handled": False}
    assert event["transaction"] == "/v1/gated"
    assert [e for e in fake_sentry.events if "gate says" in repr(e)] == [event]
    assert fake_sentry.errors == []


def test_server_access_lines_and_the_pipelines_lines_never_become_breadcrumbs(
    fresh_otel: None, clean_env: None, otlp: tuple[str, OtlpCapture], fake_sentry: FakeSentry
) -> None:
    endpoint, _ = otlp
    configure(service_name="api", otlp_endpoint=endpoint, sentry_dsn=fake_sentry.dsn)
    logging.getLogger("uvicorn.access").info('127.0.0.1:5000 - "GET /trivial HTTP/1.1" 200')
    logging.getLogger("opentelemetry.sdk.trace").warning("a pipeline warning")
    logging.getLogger("instrumentation._internal.batching").warning("exporting 3 spans failed")
    _app_logger.warning("the app's own warning")
    _app_logger.error("the app's own error")
    shutdown()
    (event,) = fake_sentry.events
    crumbs = [crumb.get("message") for crumb in event["breadcrumbs"]["values"] if crumb.get("type") == "log"]
    assert "the app's own warning" in crumbs
    assert not {"a pipeline warning", "exporting 3 spans failed"} & set(crumbs)
    assert not [crumb for crumb in crumbs if crumb and "GET /trivial" in crumb]


def test_the_pipelines_export_requests_never_become_breadcrumbs_of_the_apps_errors(
    fresh_otel: None, clean_env: None, otlp: tuple[str, OtlpCapture], fake_sentry: FakeSentry
) -> None:
    endpoint, capture = otlp
    configure(service_name="worker", otlp_endpoint=endpoint, sentry_dsn=fake_sentry.dsn)
    for index in range(3):
        with operation("render", {semconv.RENDER_ID: f"r_{index}"}):
            track("project_created")
    force_flush()  # export requests to the collector and to Sentry's OTLP endpoint, on the pipeline's threads
    assert capture.wait_for(lambda c: len([s for s in c.spans if s["name"] == "render"]) == 3)
    with sentry_sdk.isolation_scope():
        _app_logger.warning("the app's own warning")
        _app_logger.error("the app's own error")
    shutdown()
    (event,) = fake_sentry.events
    crumbs = event["breadcrumbs"]["values"]
    assert "the app's own warning" in [crumb.get("message") for crumb in crumbs]
    export_urls = (f"{endpoint}/v1/", "/integration/otlp/")
    assert not [
        crumb for crumb in crumbs if any(url in str(crumb.get("data", {}).get("url", "")) for url in export_urls)
    ]
