"""instrumentation._internal.sentry.spans: the span path to Sentry's OTLP endpoint."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from instrumentation._internal.sentry.spans import SENTRY_OTLP_HEADERS, SentryOtlpSession


class _RecordingHandler(BaseHTTPRequestHandler):
    received: list[dict[str, str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        type(self).received.append({name.lower(): value for name, value in self.headers.items()})
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    received: list[dict[str, str]] = []
    handler = type("Handler", (_RecordingHandler,), {"received": received})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/api/1/integration/otlp/v1/traces/", received
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_the_session_sends_only_the_headers_sentry_needs(server: tuple[str, list[dict[str, str]]]) -> None:
    url, received = server
    with SentryOtlpSession() as session:
        response = session.post(
            url,
            data=b"spans",
            headers={
                "Content-Type": "application/x-protobuf",
                "X-Sentry-Auth": "Sentry sentry_key=k",
                "Authorization": "Bearer collector_SEED",
                "X-Tenant": "t1",
            },
            timeout=5,
        )
    assert response.status_code == 200
    [headers] = received
    assert headers["x-sentry-auth"] == "Sentry sentry_key=k"
    assert headers["content-type"] == "application/x-protobuf"
    assert "authorization" not in headers and "x-tenant" not in headers
    assert {"content-type", "x-sentry-auth"} <= SENTRY_OTLP_HEADERS
