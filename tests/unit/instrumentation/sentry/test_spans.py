"""instrumentation._internal.sentry.spans: the span path to Sentry's OTLP endpoint."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from instrumentation._internal.sentry.spans import SENTRY_OTLP_HEADERS, sentry_otlp_exporter
from instrumentation.scrubbing import Scrubber


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


def test_the_exporter_sends_only_the_headers_sentry_needs(
    server: tuple[str, list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, received = server
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer collector_SEED,X-Tenant=t1")
    port = url.split(":")[2].split("/")[0]
    exporter = sentry_otlp_exporter(f"http://k@127.0.0.1:{port}/1", 5.0, Scrubber())
    try:
        assert exporter.send_payload(b"spans")
    finally:
        exporter.shutdown()
    [headers] = received
    assert headers["x-sentry-auth"].startswith("Sentry sentry_key=k,")
    assert headers["content-type"] == "application/x-protobuf"
    assert "authorization" not in headers and "x-tenant" not in headers
    assert set(headers) - {"host", "content-length", "accept-encoding"} <= SENTRY_OTLP_HEADERS
