"""An OTLP/HTTP capture server: a strict stand-in for a collector, on 127.0.0.1:<free port>.

Accepts ``POST /v1/traces``, ``/v1/logs``, ``/v1/metrics`` in protobuf or JSON (gzip or not),
records spans, log records and metric points as plain dicts (the shapes of
``instrumentation.testing``), and can be told to answer ``503`` with ``Retry-After``.
Anything else (unknown path, unknown content type, undecodable body) is recorded as an error
and answered 4xx, so a test can assert that none happened.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

_SPAN_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS_CODES = {0: "UNSET", 1: "OK", 2: "ERROR"}
_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId"})


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(items: Any) -> dict[str, Any]:
    return {item.key: any_value(item.value) for item in items}


def _hex(raw: bytes) -> str | None:
    return raw.hex() if raw and any(raw) else None


def _json_ids_to_base64(node: Any) -> Any:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping expects base64."""
    if isinstance(node, dict):
        return {
            key: base64.b64encode(bytes.fromhex(value)).decode()
            if key in _ID_FIELDS and value
            else _json_ids_to_base64(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_json_ids_to_base64(item) for item in node]
    return node


class OtlpCapture:
    """Everything received, as dicts; the server appends, tests read (under one lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spans: list[dict[str, Any]] = []
        self.log_records: list[dict[str, Any]] = []
        self.metric_points: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._unavailable_responses = 0
        self._retry_after_s = 0

    def answer_unavailable(self, times: int, retry_after_s: int = 0) -> None:
        """Answer the next ``times`` export requests with 503 and ``Retry-After: retry_after_s``."""
        with self._lock:
            self._unavailable_responses = times
            self._retry_after_s = retry_after_s

    def _take_unavailable(self) -> int | None:
        with self._lock:
            if self._unavailable_responses <= 0:
                return None
            self._unavailable_responses -= 1
            return self._retry_after_s

    def _record(self, kind: str, items: list[dict[str, Any]], request: dict[str, Any]) -> None:
        with self._lock:
            getattr(self, kind).extend(items)
            self.requests.append(request)

    def _error(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return {
                "spans": list(self.spans),
                "log_records": list(self.log_records),
                "metric_points": list(self.metric_points),
                "requests": list(self.requests),
                "errors": list(self.errors),
            }

    def wait_for(self, predicate: Callable[[OtlpCapture], bool], timeout_s: float = 10.0) -> bool:
        """Poll until ``predicate(self)`` holds or ``timeout_s`` passes; returns whether it held."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if predicate(self):
                    return True
            time.sleep(0.02)
        with self._lock:
            return predicate(self)


def _decode_spans(request: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "name": span.name,
                        "kind": _SPAN_KINDS.get(span.kind, str(span.kind)),
                        "trace_id": _hex(span.trace_id),
                        "span_id": _hex(span.span_id),
                        "parent_span_id": _hex(span.parent_span_id),
                        "status": _STATUS_CODES.get(span.status.code, str(span.status.code)),
                        "attributes": attributes(span.attributes),
                        "events": [
                            {"name": event.name, "attributes": attributes(event.attributes)} for event in span.events
                        ],
                        "resource": resource,
                        "scope": scope_spans.scope.name,
                        "flags": span.flags,
                        "start_time_ns": span.start_time_unix_nano,
                        "end_time_ns": span.end_time_unix_nano,
                    }
                )
    return spans


def _decode_logs(request: ExportLogsServiceRequest) -> list[dict[str, Any]]:
    records = []
    for resource_logs in request.resource_logs:
        resource = attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                records.append(
                    {
                        "event_name": record.event_name or None,
                        "trace_id": _hex(record.trace_id),
                        "span_id": _hex(record.span_id),
                        "attributes": attributes(record.attributes),
                        "body": any_value(record.body),
                        "resource": resource,
                        "scope": scope_logs.scope.name,
                        "time_ns": record.time_unix_nano,
                    }
                )
    return records


def _decode_metrics(request: ExportMetricsServiceRequest) -> list[dict[str, Any]]:
    points = []
    for resource_metrics in request.resource_metrics:
        resource = attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                for point in getattr(metric, kind).data_points if kind else ():
                    entry: dict[str, Any] = {
                        "name": metric.name,
                        "unit": metric.unit,
                        "kind": kind,
                        "attributes": attributes(point.attributes),
                        "resource": resource,
                    }
                    if kind in ("histogram", "exponential_histogram"):
                        entry.update(count=point.count, sum=point.sum)
                    else:
                        entry["value"] = getattr(point, point.WhichOneof("value"))
                    points.append(entry)
    return points


_SIGNALS: dict[str, tuple[type[Message], type[Message], Callable[[Any], list[dict[str, Any]]], str]] = {
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse, _decode_spans, "spans"),
    "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse, _decode_logs, "log_records"),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse, _decode_metrics, "metric_points"),
}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        capture = self.server.capture
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        signal = _SIGNALS.get(self.path)
        if signal is None:
            capture._error(f"unknown path {self.path}")
            self._answer(404, b"", "text/plain")
            return
        retry_after_s = capture._take_unavailable()
        if retry_after_s is not None:
            self._answer(503, b"", "text/plain", {"Retry-After": str(retry_after_s)})
            return
        request_type, response_type, decode, kind = signal
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            if self.headers.get("Content-Encoding", "") == "gzip":
                body = gzip.decompress(body)
            message = request_type()
            if content_type == "application/x-protobuf":
                message.ParseFromString(body)
            elif content_type == "application/json":
                json_format.ParseDict(_json_ids_to_base64(json.loads(body)), message, ignore_unknown_fields=True)
            else:
                capture._error(f"unsupported content type {content_type!r}")
                self._answer(415, b"", "text/plain")
                return
        except (DecodeError, json_format.ParseError, ValueError, OSError) as exc:
            capture._error(f"undecodable {self.path}: {exc}")
            self._answer(400, b"", "text/plain")
            return
        capture._record(
            kind,
            decode(message),
            {"path": self.path, "content_type": content_type, "headers": dict(self.headers.items())},
        )
        if content_type == "application/json":
            self._answer(200, b"{}", "application/json")
        else:
            self._answer(200, response_type().SerializeToString(), "application/x-protobuf")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, capture: OtlpCapture) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.capture = capture


@contextmanager
def otlp_capture_server() -> Iterator[tuple[str, OtlpCapture]]:
    """Yield ``(endpoint, capture)``: ``endpoint`` is ``http://127.0.0.1:<port>`` (no signal path)."""
    capture = OtlpCapture()
    server = _Server(capture)
    thread = threading.Thread(target=server.serve_forever, name="otlp-capture", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", capture
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
