"""instrumentation._internal.http_transport: the exporters' http.client transport, against real servers."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from opentelemetry.exporter.http.transport._requests import RequestsHTTPTransport

from instrumentation._internal.exporters import OtlpHttpLogRecordExporter, OtlpHttpSpanExporter
from instrumentation._internal.http_transport import HttpClientTransport, transport_for


class Server:
    """A real HTTP/1.1 server on loopback that records each request and answers as told."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[dict[str, object]] = []
        self.status = 200
        self.extra_headers: dict[str, str] = {}
        self.drop_idle_connections = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                server.requests.append(
                    {
                        "path": self.path,
                        "body": body,
                        "headers": {name.lower(): value for name, value in self.headers.items()},
                        "client_port": self.client_address[1],
                    }
                )
                self.send_response(server.status)
                for name, value in server.extra_headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                if server.drop_idle_connections:  # keep-alive announced, then the socket closes anyway
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}/v1/traces"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    try:
        yield running
    finally:
        running.stop()


def test_posts_the_body_and_headers_over_one_kept_alive_connection(server: Server) -> None:
    transport = HttpClientTransport()
    try:
        for body in (b"first", b"second"):
            result = transport.request(
                "POST", server.url, headers={"Content-Type": "application/x-protobuf"}, timeout=5, data=body
            )
            assert (result.status_code, result.error, result.content()) == (200, None, b"ok")
    finally:
        transport.close()
    assert [r["body"] for r in server.requests] == [b"first", b"second"]
    assert all(r["path"] == "/v1/traces" for r in server.requests)
    assert all(r["headers"]["content-type"] == "application/x-protobuf" for r in server.requests)  # type: ignore[index]
    assert server.requests[0]["client_port"] == server.requests[1]["client_port"]  # one connection


def test_a_kept_alive_connection_the_server_dropped_is_replaced_at_once(server: Server) -> None:
    """The exporter's client makes one immediate new attempt on a connection error: nothing is lost."""
    server.drop_idle_connections = True
    exporter = OtlpHttpSpanExporter(endpoint=server.url, one_attempt=True, timeout=5)
    try:
        assert all(exporter.send_payload(f"body {i}".encode()) for i in range(3))
    finally:
        exporter.shutdown()
    assert [r["body"] for r in server.requests] == [b"body 0", b"body 1", b"body 2"]
    assert len({r["client_port"] for r in server.requests}) == 3


def test_an_error_answer_keeps_its_status_and_headers(server: Server) -> None:
    server.status = 503
    server.extra_headers = {"Retry-After": "7"}
    transport = HttpClientTransport()
    try:
        result = transport.request("POST", server.url, timeout=5, data=b"x")
    finally:
        transport.close()
    assert (result.status_code, result.error) == (503, None)
    assert result.headers().get("retry-after") == "7"  # case-insensitive, as the exporters read it


def test_a_refused_connection_is_a_connection_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused
        transport = HttpClientTransport()
        result = transport.request("POST", f"http://127.0.0.1:{port}/v1/traces", timeout=5, data=b"x")
    assert result.status_code is None and result.error is not None
    assert transport.is_connection_error(result.error)


@pytest.fixture
def self_signed(tmp_path: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 (openssl is installed by .ci/run)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"),
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return tmp_path


def test_tls_is_verified_against_the_configured_ca_and_fails_against_another(self_signed: Path) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(self_signed / "cert.pem", self_signed / "key.pem")
    server = Server(tls=context)
    try:
        trusting = HttpClientTransport(verify=str(self_signed / "cert.pem"))
        default = HttpClientTransport()  # certifi's bundle: a self-signed certificate is refused
        unverified = HttpClientTransport(verify=False)
        try:
            assert trusting.request("POST", server.url, timeout=5, data=b"trusted").status_code == 200
            refused = default.request("POST", server.url, timeout=5, data=b"refused")
            assert refused.status_code is None and isinstance(refused.error, ssl.SSLCertVerificationError)
            assert default.is_connection_error(refused.error)
            assert unverified.request("POST", server.url, timeout=5, data=b"unverified").status_code == 200
        finally:
            for transport in (trusting, default, unverified):
                transport.close()
    finally:
        server.stop()
    assert [r["body"] for r in server.requests] == [b"trusted", b"unverified"]


def test_our_exporters_use_it_with_the_sdks_tls_settings(monkeypatch: pytest.MonkeyPatch, server: Server) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/collector-ca.pem")
    for cls in (OtlpHttpSpanExporter, OtlpHttpLogRecordExporter):
        exporter = cls(endpoint=server.url)
        transport = exporter._client._transport
        assert isinstance(transport, HttpClientTransport)
        assert (transport._verify, transport._cert) == ("/etc/collector-ca.pem", None)
        exporter.shutdown()


def test_a_session_of_the_callers_own_or_a_proxy_keeps_requests(
    monkeypatch: pytest.MonkeyPatch, server: Server
) -> None:
    session = requests.Session()
    session.auth = ("user", "secret")
    exporter = OtlpHttpSpanExporter(endpoint=server.url, session=session)
    assert type(exporter._client._transport) is RequestsHTTPTransport
    exporter.shutdown()

    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)
    proxied = OtlpHttpSpanExporter(endpoint=server.url)
    assert type(proxied._client._transport) is RequestsHTTPTransport
    proxied.shutdown()
    assert type(transport_for(server.url)) is RequestsHTTPTransport
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert type(transport_for(server.url)) is HttpClientTransport
