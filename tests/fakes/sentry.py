"""A recording fake Sentry on 127.0.0.1:<free port>: envelopes and OTLP traces, strictly checked.

- ``POST /api/<project>/envelope/``: the envelope format (a headers line, then items: an item
  headers line and a payload of ``length`` bytes, or up to the next newline), gzip/deflate or
  uncompressed as sentry-sdk sends them. Bad envelopes and undecodable bodies get 400, a missing
  or wrong ``sentry_key`` (``X-Sentry-Auth`` header or ``sentry_key`` query parameter) 401, an
  unknown project 404, an unsupported ``Content-Encoding`` (e.g. ``br``) 415.
- ``POST /api/<project>/integration/otlp/v1/traces[/]``: OTLP/HTTP protobuf or JSON, with the
  same ``x-sentry-auth`` check; spans are recorded as dicts (the shape of ``tests.fakes.otlp``).

Every rejection is recorded in ``errors`` so that a test can assert none happened, and every
accepted body is kept decompressed in ``received_bytes()`` for leak checks.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.fakes.otlp import _decode_spans, _json_ids_to_base64

_ENVELOPE_PATH = re.compile(r"^/api/(?P<project>[^/]+)/envelope/?$")
_OTLP_TRACES_PATH = re.compile(r"^/api/(?P<project>[^/]+)/integration/otlp/v1/traces/?$")
MAX_BODY_BYTES = 20 * 1024 * 1024


class EnvelopeError(ValueError):
    """The body is not a valid Sentry envelope."""


@dataclass
class Envelope:
    headers: dict[str, Any]
    items: list[tuple[dict[str, Any], bytes]] = field(default_factory=list)

    def payloads(self, item_type: str) -> list[dict[str, Any]]:
        return [json.loads(payload) for headers, payload in self.items if headers.get("type") == item_type]


def _json_line(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise EnvelopeError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise EnvelopeError(f"{what} is not a JSON object")
    return value


def parse_envelope(body: bytes) -> Envelope:
    """Parse the envelope format strictly (https://develop.sentry.dev/sdk/data-model/envelopes/)."""
    if not body.strip():
        raise EnvelopeError("empty envelope")
    end = body.find(b"\n")
    end = len(body) if end < 0 else end
    envelope = Envelope(_json_line(body[:end], "envelope headers"))
    position = end + 1
    while position < len(body):
        if body[position:].strip() == b"":
            break
        end = body.find(b"\n", position)
        if end < 0:
            raise EnvelopeError("item headers without a payload")
        item_headers = _json_line(body[position:end], "item headers")
        if not isinstance(item_headers.get("type"), str):
            raise EnvelopeError("item headers without a type")
        position = end + 1
        length = item_headers.get("length")
        if length is not None:
            if not isinstance(length, int) or length < 0 or position + length > len(body):
                raise EnvelopeError(f"bad item length {length!r}")
            payload = body[position : position + length]
            position += length
            if body[position : position + 1] == b"\n":
                position += 1
        else:
            end = body.find(b"\n", position)
            end = len(body) if end < 0 else end
            payload = body[position:end]
            position = end + 1
        if item_headers["type"] in ("event", "transaction"):
            event = _json_line(payload, f"{item_headers['type']} payload")
            if not re.fullmatch(r"[0-9a-f]{32}", str(event.get("event_id", ""))):
                raise EnvelopeError("event without a valid event_id")
        envelope.items.append((item_headers, payload))
    return envelope


def _sentry_key(auth_header: str) -> str | None:
    scheme, _, params = auth_header.partition(" ")
    if scheme.strip().lower() != "sentry":
        return None
    for part in params.split(","):
        name, _, value = part.strip().partition("=")
        if name == "sentry_key":
            return value
    return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _reject(self, status: int, reason: str) -> None:
        self.server.sentry._error(f"{status} {self.path}: {reason}")
        self._answer(status, json.dumps({"detail": reason}).encode())

    def do_POST(self) -> None:
        sentry = self.server.sentry
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._reject(413, "request too large")
            return
        raw = self.rfile.read(length)
        url = urlsplit(self.path)
        envelope_path = _ENVELOPE_PATH.match(url.path)
        otlp_path = _OTLP_TRACES_PATH.match(url.path)
        match = envelope_path or otlp_path
        if match is None:
            self._reject(404, "unknown path")
            return
        if match["project"] != sentry.project_id:
            self._reject(404, "unknown project")
            return
        key = _sentry_key(self.headers.get("X-Sentry-Auth", "")) or parse_qs(url.query).get("sentry_key", [None])[0]
        if key is None:
            self._reject(401, "missing authorization information")
            return
        if key != sentry.key:
            self._reject(401, "invalid sentry_key")
            return
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(raw)
            elif encoding == "deflate":
                body = zlib.decompress(raw)
            elif encoding in ("identity", ""):
                body = raw
            else:
                self._reject(415, f"unsupported content encoding {encoding!r}")
                return
        except (OSError, zlib.error, EOFError) as exc:
            self._reject(400, f"undecodable {encoding} body: {exc}")
            return
        sentry._record_headers(url.path, self.headers.items())
        if envelope_path:
            self._envelope(body)
        else:
            self._otlp_traces(body)

    def _envelope(self, body: bytes) -> None:
        try:
            envelope = parse_envelope(body)
        except EnvelopeError as exc:
            self._reject(400, str(exc))
            return
        self.server.sentry._record_envelope(envelope, body)
        self._answer(200, json.dumps({"id": envelope.headers.get("event_id")}).encode())

    def _otlp_traces(self, body: bytes) -> None:
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        message = ExportTraceServiceRequest()
        try:
            if content_type == "application/x-protobuf":
                message.ParseFromString(body)
            elif content_type == "application/json":
                json_format.ParseDict(_json_ids_to_base64(json.loads(body)), message, ignore_unknown_fields=True)
            else:
                self._reject(415, f"unsupported content type {content_type!r}")
                return
        except (DecodeError, json_format.ParseError, ValueError) as exc:
            self._reject(400, f"undecodable OTLP body: {exc}")
            return
        self.server.sentry._record_spans(_decode_spans(message), body)
        if content_type == "application/json":
            self._answer(200, b"{}")
        else:
            self._answer(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sentry: FakeSentry) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.sentry = sentry


class FakeSentry:
    """``with FakeSentry() as sentry: sentry_sdk.init(dsn=sentry.dsn, ...)``; read what it received."""

    def __init__(self, key: str = "publickey0123456789", project_id: str = "4242") -> None:
        self.key = key
        self.project_id = project_id
        self._lock = threading.Lock()
        self._envelopes: list[Envelope] = []
        self._spans: list[dict[str, Any]] = []
        self._bodies: list[bytes] = []
        self._errors: list[str] = []
        self._request_headers: list[tuple[str, dict[str, str]]] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> FakeSentry:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-sentry", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    def __enter__(self) -> FakeSentry:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake Sentry is not started")
        return self._server.server_address[1]

    @property
    def dsn(self) -> str:
        return f"http://{self.key}@127.0.0.1:{self.port}/{self.project_id}"

    # -- recording (server threads) ----------------------------------------------------------
    def _record_envelope(self, envelope: Envelope, body: bytes) -> None:
        with self._lock:
            self._envelopes.append(envelope)
            self._bodies.append(body)

    def _record_spans(self, spans: list[dict[str, Any]], body: bytes) -> None:
        with self._lock:
            self._spans.extend(spans)
            self._bodies.append(body)

    def _record_headers(self, path: str, headers: Any) -> None:
        with self._lock:
            self._request_headers.append((path, {name.lower(): value for name, value in headers}))

    def _error(self, message: str) -> None:
        with self._lock:
            self._errors.append(message)

    # -- reading (tests) ---------------------------------------------------------------------
    @property
    def envelopes(self) -> list[Envelope]:
        with self._lock:
            return list(self._envelopes)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Error events (envelope items of type ``event``), in arrival order."""
        return [event for envelope in self.envelopes for event in envelope.payloads("event")]

    @property
    def spans(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._spans)

    @property
    def errors(self) -> list[str]:
        with self._lock:
            return list(self._errors)

    @property
    def request_headers(self) -> list[tuple[str, dict[str, str]]]:
        """``(path, headers)`` of every authenticated request, header names in lower case."""
        with self._lock:
            return list(self._request_headers)

    def received_bytes(self) -> bytes:
        """Every accepted request body, decompressed, concatenated: for "this never left" checks."""
        with self._lock:
            return b"\n".join(self._bodies)

    def wait_for(self, predicate: Callable[[FakeSentry], bool], timeout_s: float = 10.0) -> bool:
        """Poll until ``predicate(self)`` holds or ``timeout_s`` passes; returns whether it held."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.02)
        return predicate(self)
