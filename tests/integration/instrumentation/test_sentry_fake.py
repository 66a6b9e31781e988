"""The fake Sentry is strict: it accepts what sentry-sdk sends and rejects what Sentry rejects."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.fakes.sentry import EnvelopeError, FakeSentry, parse_envelope

EVENT_ID = "9ec79c33ec9942ab8353589fcb2e04dc"


@pytest.fixture
def fake_sentry() -> Iterator[FakeSentry]:
    with FakeSentry() as server:
        yield server


def _envelope(*items: tuple[dict[str, object], bytes]) -> bytes:
    lines = [json.dumps({"event_id": EVENT_ID}).encode()]
    for headers, payload in items:
        lines += [json.dumps(headers).encode(), payload]
    return b"\n".join(lines) + b"\n"


EVENT = json.dumps({"event_id": EVENT_ID, "message": "hello\nworld"}).encode()


def _auth(key: str) -> dict[str, str]:
    return {"X-Sentry-Auth": f"Sentry sentry_key={key}, sentry_version=7, sentry_client=test/1"}


def _post(server: FakeSentry, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{server.port}{path}", content=body, headers=headers, timeout=5)


def test_parse_envelope_with_and_without_length() -> None:
    body = _envelope(({"type": "event", "length": len(EVENT)}, EVENT), ({"type": "client_report"}, b'{"a":1}'))
    envelope = parse_envelope(body)
    assert envelope.headers == {"event_id": EVENT_ID}
    assert [headers["type"] for headers, _ in envelope.items] == ["event", "client_report"]
    assert envelope.payloads("event") == [{"event_id": EVENT_ID, "message": "hello\nworld"}]
    # a payload with an explicit length may contain newlines
    with_newline = b'{"event_id":"%s","message":"a\nb"}' % EVENT_ID.encode()
    assert (
        parse_envelope(_envelope(({"type": "attachment", "length": len(with_newline)}, with_newline))).items[0][1]
        == with_newline
    )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json\n",
        b"[1,2]\n",
        _envelope(({"length": 2}, b"{}")),  # item without a type
        _envelope(({"type": "event", "length": 999}, EVENT)),  # length past the end
        _envelope(({"type": "event"}, b"{not json")),
        _envelope(({"type": "event"}, b'{"event_id": "nope"}')),
        b'{"event_id":"%s"}\n{"type":"event"}' % EVENT_ID.encode(),  # item headers, no payload line
    ],
)
def test_parse_envelope_rejects_bad_envelopes(body: bytes) -> None:
    with pytest.raises(EnvelopeError):
        parse_envelope(body)


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("identity", lambda b: b), ("gzip", gzip.compress), ("deflate", zlib.compress)],
)
def test_accepts_envelopes_in_every_encoding_sentry_sdk_uses(
    fake_sentry: FakeSentry, encoding: str, compress: object
) -> None:
    body = _envelope(({"type": "event", "length": len(EVENT)}, EVENT))
    response = _post(
        fake_sentry,
        f"/api/{fake_sentry.project_id}/envelope/",
        compress(body),  # type: ignore[operator]
        {**_auth(fake_sentry.key), "Content-Encoding": encoding, "Content-Type": "application/x-sentry-envelope"},
    )
    assert response.status_code == 200
    assert fake_sentry.events == [{"event_id": EVENT_ID, "message": "hello\nworld"}]
    assert body in fake_sentry.received_bytes()
    assert fake_sentry.errors == []


def test_accepts_the_key_as_a_query_parameter(fake_sentry: FakeSentry) -> None:
    body = _envelope(({"type": "event"}, EVENT))
    path = f"/api/{fake_sentry.project_id}/envelope/?sentry_key={fake_sentry.key}&sentry_version=7"
    assert _post(fake_sentry, path, body, {}).status_code == 200


OTLP_PATH = "/api/{project}/integration/otlp/v1/traces"
PROTOBUF = {"Content-Type": "application/x-protobuf"}


@pytest.mark.parametrize(
    ("path", "auth_key", "headers", "body", "status"),
    [
        ("/api/{project}/envelope/", None, {}, None, 401),
        ("/api/{project}/envelope/", "wrong", {}, None, 401),
        ("/api/{project}/envelope/", None, {"X-Sentry-Auth": "Basic abc"}, None, 401),
        ("/api/999/envelope/", "right", {}, None, 404),
        ("/api/{project}/store/", "right", {}, None, 404),
        ("/api/{project}/envelope/", "right", {}, b"garbage", 400),
        ("/api/{project}/envelope/", "right", {"Content-Encoding": "br"}, None, 415),
        ("/api/{project}/envelope/", "right", {"Content-Encoding": "gzip"}, b"not gzip", 400),
        (OTLP_PATH, None, PROTOBUF, b"", 401),
        (OTLP_PATH, "right", {"Content-Type": "text/plain"}, b"", 415),
        (OTLP_PATH, "right", PROTOBUF, b"\xff\xff", 400),
    ],
)
def test_rejects_what_sentry_rejects(
    fake_sentry: FakeSentry,
    path: str,
    auth_key: str | None,
    headers: dict[str, str],
    body: bytes | None,
    status: int,
) -> None:
    if auth_key is not None:
        headers = {**_auth(fake_sentry.key if auth_key == "right" else auth_key), **headers}
    response = _post(
        fake_sentry,
        path.format(project=fake_sentry.project_id),
        _envelope(({"type": "event"}, EVENT)) if body is None else body,
        headers,
    )
    assert response.status_code == status
    assert fake_sentry.events == [] and fake_sentry.spans == []
    assert len(fake_sentry.errors) == 1 and fake_sentry.errors[0].startswith(str(status))


def test_records_otlp_spans_from_a_real_exporter_at_sentrys_url(fake_sentry: FakeSentry) -> None:
    exporter = OTLPSpanExporter(
        endpoint=f"http://127.0.0.1:{fake_sentry.port}/api/{fake_sentry.project_id}/integration/otlp/v1/traces/",
        headers=_auth(fake_sentry.key),
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("render", attributes={"phonoglyph.operation": "render"}) as span:
        pass
    provider.shutdown()
    assert [(s["name"], s["trace_id"], s["attributes"]) for s in fake_sentry.spans] == [
        ("render", format(span.get_span_context().trace_id, "032x"), {"phonoglyph.operation": "render"})
    ]
    assert fake_sentry.errors == []


def test_dsn_and_stop(fake_sentry: FakeSentry) -> None:
    assert fake_sentry.dsn == f"http://{fake_sentry.key}@127.0.0.1:{fake_sentry.port}/{fake_sentry.project_id}"
    fake_sentry.stop()
    with pytest.raises(RuntimeError):
        fake_sentry.port  # noqa: B018
