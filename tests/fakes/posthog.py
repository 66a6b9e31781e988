"""A strict fake of PostHog's capture endpoint ``POST /batch/``: a real HTTP server on 127.0.0.1.

It rejects what PostHog's capture service rejects, with PostHog's status codes:

- body not gzip/JSON, not an object, no ``batch`` list, or an empty batch: 400;
- ``api_key`` (or ``token``) missing or not one of ``api_keys``: 401;
- any event without a non-empty ``event`` or ``distinct_id``, with an invalid ``uuid``, an
  unparseable ``timestamp``, or non-object ``properties``: the WHOLE batch is 400, nothing stored;
- a request body over 20 MiB (compressed or decompressed): 413;
- an event over ~1 MiB: 413. PostHog's Rust capture service maps its ``EventTooBig`` error to
  413 Payload Too Large (older capture versions answered 400); the worker handles both.

``require_uuid`` (default on) also refuses an event without ``uuid``: PostHog would make one up,
but our delivery is idempotent only through the uuid fixed at mapping, so a missing one is a bug.

``hold()`` keeps requests in flight until ``release()`` (what a kill during delivery needs).

Scriptable: ``script(*answers)`` queues answers consumed one per request before validation:
an int status, ``Answer(status, headers, detail)``, ``"drop"`` (read the request, close the
connection without answering) or ``"partial"`` (validate and store, then answer 503, as PostHog
may after a partial write). With the queue empty, requests are validated and answered for real.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid as uuid_module
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Answer", "FakePostHog", "RecordedRequest"]

MAX_REQUEST_BYTES = 20 * 2**20
MAX_EVENT_BYTES = 2**20


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    detail: str = "scripted answer"


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: bytes  # as received (gzip when Content-Encoding says so)
    status: int | None  # None: the connection was dropped
    payload: dict | None  # the decoded JSON body, when it decoded


class _Rejection(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # a client that dies mid-connection (the crash test kills it) is expected, not an error
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class FakePostHog:
    def __init__(
        self,
        *,
        api_keys: tuple[str, ...] = ("phc_test",),
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_event_bytes: int = MAX_EVENT_BYTES,
        require_uuid: bool = True,
        latency_s: float = 0.0,
    ) -> None:
        self.api_keys = frozenset(api_keys)
        self.max_request_bytes = max_request_bytes
        self.max_event_bytes = max_event_bytes
        self.require_uuid = require_uuid
        self.latency_s = latency_s  # each answer waits this long: keeps requests in flight
        self._in_flight = 0
        self._open = threading.Event()  # cleared by hold(): requests wait until release()
        self._open.set()
        self._lock = threading.Lock()
        self._answers: list[int | Answer | str] = []
        self._events: list[dict] = []
        self._requests: list[RecordedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakePostHog:
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-posthog", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> FakePostHog:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def host(self) -> str:
        if self._server is None:
            raise RuntimeError("FakePostHog is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- script and records ------------------------------------------------------------

    def script(self, *answers: int | Answer | str) -> None:
        for answer in answers:
            if not (isinstance(answer, (int, Answer)) or answer in ("drop", "partial")):
                raise ValueError(f"unknown scripted answer {answer!r}")
        with self._lock:
            self._answers.extend(answers)

    def hold(self) -> None:
        """Keep answers back (requests stay in flight) until release(), at most 60 s."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def in_flight(self) -> int:
        """Requests received whose answer is not written yet."""
        with self._lock:
            return self._in_flight

    def pending_answers(self) -> int:
        with self._lock:
            return len(self._answers)

    @property
    def events(self) -> list[dict]:
        """Accepted events in arrival order, duplicates included."""
        with self._lock:
            return list(self._events)

    def uuids(self) -> list[str]:
        with self._lock:
            return [event.get("uuid") for event in self._events]

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    # -- the endpoint ------------------------------------------------------------------

    def _next_answer(self) -> int | Answer | str | None:
        with self._lock:
            return self._answers.pop(0) if self._answers else None

    def _record(self, request: RecordedRequest, events: list[dict] = ()) -> None:
        with self._lock:
            self._requests.append(request)
            self._events.extend(events)

    def _decode(self, headers: dict[str, str], body: bytes) -> dict:
        if headers.get("content-encoding", "").lower() == "gzip":
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                body = inflater.decompress(body, self.max_request_bytes + 1)
            except zlib.error as exc:
                raise _Rejection(400, f"invalid gzip: {exc}") from None
            if len(body) > self.max_request_bytes or inflater.unconsumed_tail:
                raise _Rejection(413, "decompressed payload over the request limit")
            if not inflater.eof:
                raise _Rejection(400, "truncated gzip")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise _Rejection(400, f"body is not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise _Rejection(400, "body is not a JSON object")
        return payload

    def _validate(self, payload: dict) -> list[dict]:
        token = payload.get("api_key", payload.get("token"))
        if not isinstance(token, str) or not token:
            raise _Rejection(401, "API key missing")
        if token not in self.api_keys:
            raise _Rejection(401, "API key invalid")
        batch = payload.get("batch")
        if not isinstance(batch, list):
            raise _Rejection(400, "no batch list in the body")
        if not batch:
            raise _Rejection(400, "empty batch")
        if "sent_at" in payload and not _is_timestamp(payload["sent_at"]):
            raise _Rejection(400, "invalid sent_at")
        for index, event in enumerate(batch):
            problem = self._event_problem(event)
            if problem:
                raise _Rejection(problem[0], f"event {index}: {problem[1]}")
        return batch

    def _event_problem(self, event) -> tuple[int, str] | None:
        if not isinstance(event, dict):
            return 400, "not an object"
        if not isinstance(event.get("event"), str) or not event["event"]:
            return 400, "missing event name"
        if not isinstance(event.get("distinct_id"), str) or not event["distinct_id"].strip():
            return 400, "missing distinct_id"
        if "uuid" in event or self.require_uuid:
            try:
                uuid_module.UUID(event["uuid"])
            except (KeyError, TypeError, ValueError, AttributeError):
                return 400, f"invalid uuid {event.get('uuid')!r}"
        if "timestamp" in event and not _is_timestamp(event["timestamp"]):
            return 400, f"invalid timestamp {event['timestamp']!r}"
        if "properties" in event and not isinstance(event["properties"], dict):
            return 400, "properties is not an object"
        if len(json.dumps(event).encode()) > self.max_event_bytes:
            return 413, "event too big"
        return None


def _is_timestamp(value) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _handler_for(fake: FakePostHog) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:
            headers = {key.lower(): value for key, value in self.headers.items()}
            if self.path.split("?")[0] not in ("/batch/", "/batch"):
                self._drain(headers)
                self._answer(404, {"detail": "not found"})
                return
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                self._answer(400, {"detail": "bad content-length"}, close=True)
                return
            if length > fake.max_request_bytes:
                self._discard(length)
                fake._record(RecordedRequest(self.path, headers, b"", 413, None))
                self._answer(413, {"detail": "request over the size limit"})
                return
            body = self.rfile.read(length)
            with fake._lock:
                fake._in_flight += 1
            try:
                if fake.latency_s:
                    threading.Event().wait(fake.latency_s)
                fake._open.wait(timeout=60)
                self._handle_batch(headers, body)
            finally:
                with fake._lock:
                    fake._in_flight -= 1

        def _handle_batch(self, headers: dict[str, str], body: bytes) -> None:
            scripted = fake._next_answer()
            if scripted == "drop":
                fake._record(RecordedRequest(self.path, headers, body, None, None))
                self.close_connection = True
                return
            if isinstance(scripted, (int, Answer)):
                answer = scripted if isinstance(scripted, Answer) else Answer(scripted)
                fake._record(RecordedRequest(self.path, headers, body, answer.status, None))
                self._answer(answer.status, {"type": "scripted", "detail": answer.detail}, answer.headers)
                return

            payload = None
            try:
                payload = fake._decode(headers, body)
                events = fake._validate(payload)
            except _Rejection as rejection:
                fake._record(RecordedRequest(self.path, headers, body, rejection.status, payload))
                self._answer(rejection.status, {"type": "validation_error", "detail": rejection.detail})
                return
            if scripted == "partial":
                fake._record(RecordedRequest(self.path, headers, body, 503, payload), events)
                self._answer(503, {"type": "server_error", "detail": "partial write"})
                return
            fake._record(RecordedRequest(self.path, headers, body, 200, payload), events)
            self._answer(200, {"status": 1})

        def _drain(self, headers: dict[str, str]) -> None:
            try:
                self._discard(int(headers.get("content-length", "0")))
            except ValueError:
                self.close_connection = True

        def _discard(self, length: int) -> None:
            while length > 0:
                chunk = self.rfile.read(min(length, 2**20))
                if not chunk:
                    break
                length -= len(chunk)

        def _answer(self, status: int, body: dict, headers: dict[str, str] | None = None, close: bool = False) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            try:
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client died waiting (a crash test)
                self.close_connection = True

    return Handler
