"""Any FastAPI app under opentelemetry-instrument (uvicorn, subprocess): one correct SERVER span per request
for included routers, a mounted sub-app, static files and a websocket; one Sentry event per 5xx, its stack
trace in-app from the app's own frames; a client's normal websocket close is no Sentry event."""

from __future__ import annotations

import base64
import importlib.util
import os
import socket
import struct
from pathlib import Path

import httpx
import pytest

from tests.fakes.otlp import OtlpCapture
from tests.fakes.sentry import FakeSentry
from tests.integration.instrumentation.test_distro import BIN, served

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
WEBSOCKET_LIBRARY = os.environ.get("PHONOGLYPH_WEBSOCKETS_TARGET")
"""A ``pip install --target`` directory with ``websockets`` (uvicorn serves no websocket without it)."""
WEBSOCKETS = bool(WEBSOCKET_LIBRARY) or any(importlib.util.find_spec(name) for name in ("websockets", "wsproto"))
"""Whether the server can serve websockets: the websocket part of the test runs only then."""


def _frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455), payloads under 126 bytes."""
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    head = sock.recv(2, socket.MSG_WAITALL)
    length = head[1] & 0x7F
    return head[0] & 0x0F, sock.recv(length, socket.MSG_WAITALL) if length else b""


def _websocket_round_trip(base_url: str, path: str) -> tuple[bytes, int]:
    """Open ``path``, send one text message, read the answer, close with 1000; (answer, server close code)."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(1024)
            assert chunk, response
            response += chunk
        assert response.startswith(b"HTTP/1.1 101"), response
        sock.sendall(_frame(0x1, b"hi"))
        opcode, answer = _read_frame(sock)
        assert opcode == 0x1
        sock.sendall(_frame(0x8, struct.pack("!H", 1000)))
        opcode, payload = _read_frame(sock)
        assert opcode == 0x8
        return answer, struct.unpack("!H", payload[:2])[0]


def test_routes_mounts_and_websockets_under_opentelemetry_instrument(
    otlp: tuple[str, OtlpCapture], tmp_path: Path
) -> None:
    endpoint, capture = otlp
    command = [str(BIN / "uvicorn"), "mounted_app:app", "--host", "127.0.0.1", "--port", "0"]
    python_path = os.pathsep.join(p for p in (WEBSOCKET_LIBRARY, os.environ.get("PYTHONPATH")) if p)
    extra_env = {"PYTHONPATH": python_path} if python_path else {}
    log_path = tmp_path / "server.log"
    with FakeSentry() as sentry:
        with served(command, endpoint, log_path, {"SENTRY_DSN": sentry.dsn, **extra_env}) as base_url:
            with httpx.Client(base_url=base_url, timeout=5) as client:
                assert client.get("/api/users/7").status_code == 200
                assert client.post("/api/users/").status_code == 200
                traceparent = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
                assert client.get("/sub/items/3", headers={"traceparent": traceparent}).status_code == 200
                assert client.get("/sub/fail").status_code == 500
            with httpx.Client(base_url=base_url, timeout=5) as client:  # uvicorn closed the failed one
                assert client.get("/static/mounted_app.py").status_code == 200
                assert client.get("/openapi.json").status_code == 200
            expected = 6
            if WEBSOCKETS:
                assert _websocket_round_trip(base_url, "/ws/lobby") == (b"lobby: hi", 1000)
                expected += 1
            assert capture.wait_for(lambda c: len(c.spans) >= expected, timeout_s=20), capture.snapshot()["spans"]
            assert sentry.wait_for(lambda s: bool(s.events) and len(s.spans) >= expected, timeout_s=20)
        spans = capture.snapshot()["spans"]
        assert sorted(span["name"] for span in spans) == sorted(
            [
                "GET /api/users/{user_id}",
                "POST /api/users/",
                "GET /sub/items/{item_id}",
                "GET /sub/fail",
                "GET /static/{path:path}",
                "GET /openapi.json",
            ]
            + (["WEBSOCKET /ws/{room}"] if WEBSOCKETS else [])
        )
        assert all(span["kind"] == "SERVER" for span in spans)
        by_name = {span["name"]: span for span in spans}
        sub_item = by_name["GET /sub/items/{item_id}"]
        assert (sub_item["trace_id"], sub_item["parent_span_id"]) == (TRACE_ID, PARENT_SPAN_ID)
        assert by_name["GET /sub/fail"]["attributes"]["http.route"] == "/sub/fail"
        if WEBSOCKETS:
            websocket = by_name["WEBSOCKET /ws/{room}"]
            assert websocket["status"] == "UNSET"
            assert websocket["attributes"]["websocket.close.code"] == 1000

        [event] = sentry.events  # the failure; the websocket's WebSocketDisconnect uvicorn logs is none
        assert event["transaction"] == "/sub/fail"
        assert event["contexts"]["trace"]["trace_id"] == by_name["GET /sub/fail"]["trace_id"]
        assert event["request"]["url"].endswith("/sub/fail")
        assert "/sub/sub/" not in event["request"]["url"]
        [exception] = [value for value in event["exception"]["values"] if value["type"] == "RuntimeError"]
        frames = exception["stacktrace"]["frames"]
        ours = [frame for frame in frames if frame.get("module", "").startswith("instrumentation")]
        assert ours and not any(frame.get("in_app") for frame in ours), frames
        assert frames[-1]["function"] == "sub_fail" and frames[-1].get("in_app") is not False
        assert sentry.errors == []
    log = log_path.read_text(errors="replace")
    if WEBSOCKETS:
        assert "WebSocketDisconnect" in log  # uvicorn logged it, as it does bare: Sentry did not take it
