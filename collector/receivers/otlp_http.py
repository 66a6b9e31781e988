"""OTLP/HTTP 1.x receiver as a raw ASGI app: ``/v1/traces``, ``/v1/logs``, ``/v1/metrics``.

Statuses (DESIGN.md "Collector HTTP"): 200 only after the derived events are committed to the
outbox, with ``partial_success`` for items that cannot be mapped; 400 undecodable; 401 bad or
missing bearer token (constant-time compare); 413 over the compressed or the decompressed limit
(gzip is inflated incrementally, so a bomb stops at the limit); 415 unknown content type or
encoding; 429 outbox full or too many requests in flight, 503 storage trouble, both with
``Retry-After``. Answers are in the request's encoding (``google.rpc.Status`` on errors).

The event loop only reads bodies; inflating, decoding, mapping and the outbox commit run on a
small thread pool so a commit never stalls other connections.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from collector.config import LimitsConfig
from collector.delivery.outbox import OutboxError, OutboxFullError
from collector.metrics import Metrics
from collector.processors.mapping import (
    DEFAULT_RULES,
    MappingResult,
    MappingRules,
    count_metric_points,
    map_logs,
    map_traces,
)

logger = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

# google.rpc.Code values used in error bodies
_INVALID_ARGUMENT = 3
_DEADLINE_EXCEEDED = 4
_RESOURCE_EXHAUSTED = 8
_INTERNAL = 13
_UNAVAILABLE = 14
_UNAUTHENTICATED = 16
_STATUS_CODES = {
    400: _INVALID_ARGUMENT,
    401: _UNAUTHENTICATED,
    408: _DEADLINE_EXCEEDED,
    413: _INVALID_ARGUMENT,
    415: _INVALID_ARGUMENT,
    429: _RESOURCE_EXHAUSTED,
    500: _INTERNAL,
    503: _UNAVAILABLE,
}

_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


@dataclass(frozen=True)
class _Signal:
    name: str
    request_type: type[Message]
    response_type: type[Message]
    partial_type: type[Message]
    rejected_field: str
    received_metric: str


_SIGNALS = {
    "/v1/traces": _Signal(
        "traces",
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
        ExportTracePartialSuccess,
        "rejected_spans",
        "received_spans_total",
    ),
    "/v1/logs": _Signal(
        "logs",
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
        ExportLogsPartialSuccess,
        "rejected_log_records",
        "received_log_records_total",
    ),
    "/v1/metrics": _Signal(
        "metrics",
        ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
        ExportMetricsPartialSuccess,
        "rejected_data_points",
        "received_metric_points_total",
    ),
}


class _HttpError(Exception):
    def __init__(self, status: int, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


# -- codecs -------------------------------------------------------------------------------------


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """Inflate gzip (one or more members) incrementally, refusing to produce more than max_bytes."""
    pieces: list[bytes] = []
    total = 0
    pending = data
    while pending:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            while True:
                piece = inflater.decompress(pending, max_bytes + 1 - total)
                total += len(piece)
                if total > max_bytes:
                    raise _HttpError(413, f"decompressed body over {max_bytes} bytes")
                pieces.append(piece)
                pending = inflater.unconsumed_tail
                if inflater.eof or not pending:
                    break
        except zlib.error as exc:
            raise _HttpError(400, f"invalid gzip body: {exc}") from None
        if not inflater.eof:
            raise _HttpError(400, "invalid gzip body: truncated")
        pending = inflater.unused_data
    return b"".join(pieces)


def _hex_ids_to_base64(node):
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping wants base64."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise _HttpError(400, f"{key} is not hex") from None
            elif isinstance(value, (dict, list)):
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)):
                _hex_ids_to_base64(item)
    return node


def decode(signal: _Signal, body: bytes, *, is_json: bool) -> Message:
    message = signal.request_type()
    try:
        if is_json:
            document = json.loads(body)
            if not isinstance(document, dict):
                raise _HttpError(400, "the JSON body must be an object")
            json_format.ParseDict(_hex_ids_to_base64(document), message, ignore_unknown_fields=True)
        else:
            message.ParseFromString(body)
    except (DecodeError, json_format.ParseError, ValueError, RecursionError) as exc:
        raise _HttpError(400, f"undecodable {signal.name} body: {str(exc)[:200]}") from None
    return message


def _status_body(status: int, message: str, *, is_json: bool) -> bytes:
    """A ``google.rpc.Status`` (code, message), hand-encoded: the proto is two fields."""
    code = _STATUS_CODES.get(status, _INVALID_ARGUMENT)
    if is_json:
        return json.dumps({"code": code, "message": message}).encode()
    text = message.encode()
    length = len(text)
    varint = bytearray()
    while True:
        byte = length & 0x7F
        length >>= 7
        varint.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([0x08, code, 0x12]) + bytes(varint) + text


# -- the ASGI app -------------------------------------------------------------------------------


class OtlpHttpReceiver:
    """ASGI app. ``put`` commits events durably (``Outbox.put``); ``ready`` and ``render_metrics`` back
    ``/readyz`` and ``/metrics``; ``scrub`` re-scrubs mapped events in place."""

    def __init__(
        self,
        *,
        put: Callable[[Sequence[dict]], int],
        metrics: Metrics,
        limits: LimitsConfig = LimitsConfig(),
        rules: MappingRules = DEFAULT_RULES,
        auth_token: str | None = None,
        scrub: Callable[[list[dict]], int] | None = None,
        ready: Callable[[], bool] = lambda: True,
        render_metrics: Callable[[], str] | None = None,
        worker_threads: int = 2,
    ) -> None:
        self._put = put
        self._metrics = metrics
        self._limits = limits
        self._rules = rules
        self._expected_authorization = f"Bearer {auth_token}".encode() if auth_token else None
        self._scrub = scrub
        self._ready = ready
        self._render_metrics = render_metrics or metrics.render
        self._executor = ThreadPoolExecutor(max_workers=worker_threads, thread_name_prefix="otlp-receiver")
        self._inflight = 0

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        signal = _SIGNALS.get(path)
        if signal is not None:
            if method != "POST":
                await _send(send, _Response(405, b"method not allowed\n", "text/plain", ((b"allow", b"POST"),)))
                return
            response = await self._export(signal, scope, receive)
        elif method not in ("GET", "HEAD"):
            response = _Response(
                404 if path not in ("/healthz", "/readyz", "/metrics") else 405, b"not found\n", "text/plain"
            )
        elif path == "/healthz":
            response = _Response(200, b"ok\n", "text/plain")
        elif path == "/readyz":
            # probes run on the loop's default executor, never queued behind ingest work
            ready = await asyncio.get_running_loop().run_in_executor(None, self._ready)
            response = (
                _Response(200, b"ready\n", "text/plain") if ready else _Response(503, b"not ready\n", "text/plain")
            )
        elif path == "/metrics":
            text = await asyncio.get_running_loop().run_in_executor(None, self._render_metrics)
            response = _Response(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")
        else:
            response = _Response(404, b"not found\n", "text/plain")
        await _send(send, response)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _export(self, signal: _Signal, scope, receive) -> _Response:
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        is_json = content_type == JSON.encode()
        self._inflight += 1
        try:
            if self._expected_authorization is not None and not hmac.compare_digest(
                headers.get(b"authorization", b""), self._expected_authorization
            ):
                raise _HttpError(401, "missing or wrong bearer token")
            if not is_json and content_type != PROTOBUF.encode():
                raise _HttpError(415, f"content-type must be {PROTOBUF} or {JSON}")
            encoding = headers.get(b"content-encoding", b"identity").strip().lower()
            if encoding not in (b"gzip", b"identity", b""):
                raise _HttpError(415, "content-encoding must be gzip or none")
            if self._inflight > self._limits.max_inflight_requests:
                raise _HttpError(429, "too many requests in flight", retry_after_s=self._limits.retry_after_s)
            body = await self._read_body(headers, receive)
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._process, signal, body, encoding == b"gzip", is_json
            )
        except _HttpError as exc:
            return self._error(exc, is_json=is_json)
        finally:
            self._inflight -= 1

    async def _read_body(self, headers: dict, receive) -> bytes:
        limit = self._limits.max_request_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _HttpError(413, f"body over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        timeout_s = self._limits.body_timeout_s
        try:
            async with asyncio.timeout(timeout_s):  # one deadline for the whole body: a trickle cannot hold a slot
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _HttpError(400, "client disconnected")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise _HttpError(413, f"body over {limit} bytes")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise _HttpError(408, f"body not received within {timeout_s} s") from None

    def _process(self, signal: _Signal, body: bytes, gzipped: bool, is_json: bool) -> _Response:
        try:
            if gzipped:
                body = gunzip(body, self._limits.max_decompressed_bytes)
            elif len(body) > self._limits.max_decompressed_bytes:
                raise _HttpError(413, f"body over {self._limits.max_decompressed_bytes} bytes")
            request = decode(signal, body, is_json=is_json)
            result = self._map(signal, request, None if is_json else body)
            if result.events:
                if self._scrub is not None:
                    self._scrub(result.events)
                try:
                    queued = self._put(result.events)
                except OutboxFullError as exc:
                    raise _HttpError(429, str(exc), retry_after_s=self._limits.retry_after_s) from None
                except OutboxError as exc:
                    logger.warning("outbox error, answering 503: %s", exc)
                    raise _HttpError(503, "storage unavailable", retry_after_s=self._limits.retry_after_s) from None
                self._metrics.inc("queued_events_total", queued)
        except _HttpError as exc:
            return self._error(exc, is_json=is_json)
        except Exception:  # a bug, not a transient condition: log it and say so
            logger.exception("receiver failed on a %s request", signal.name)
            return self._error(_HttpError(500, "internal error"), is_json=is_json)
        return self._success(signal, result, is_json=is_json)

    def _map(self, signal: _Signal, request: Message, raw_body: bytes | None) -> MappingResult:
        if signal.name == "traces":
            result = map_traces(request, self._rules, raw_body=raw_body)
            ignored_reason = "untagged_span"
        elif signal.name == "logs":
            result = map_logs(request, self._rules)
            ignored_reason = "log_without_event_name"
        else:
            result = count_metric_points(request)
            ignored_reason = "metric_point"
        metrics = self._metrics
        metrics.inc(signal.received_metric, result.received)
        if result.events:
            metrics.inc("mapped_events_total", len(result.events))
        if result.ignored:
            metrics.inc("dropped_items_total", result.ignored, reason=ignored_reason)
        if result.rejected:
            metrics.inc("dropped_items_total", result.rejected, reason="unmappable")
        return result

    def _success(self, signal: _Signal, result: MappingResult, *, is_json: bool) -> _Response:
        response = signal.response_type()
        if result.rejected:
            partial = signal.partial_type(error_message=result.error_message)
            setattr(partial, signal.rejected_field, result.rejected)
            response.partial_success.CopyFrom(partial)
        if is_json:
            return _Response(200, json.dumps(json_format.MessageToDict(response)).encode(), JSON)
        return _Response(200, response.SerializeToString(), PROTOBUF)

    def _error(self, exc: _HttpError, *, is_json: bool) -> _Response:
        self._metrics.inc("rejected_requests_total", status=str(exc.status))
        headers = ()
        if exc.retry_after_s is not None:
            headers = ((b"retry-after", str(exc.retry_after_s).encode()),)
        return _Response(
            exc.status, _status_body(exc.status, exc.message, is_json=is_json), JSON if is_json else PROTOBUF, headers
        )


async def _send(send, response: _Response) -> None:
    headers = [
        (b"content-type", response.content_type.encode()),
        (b"content-length", str(len(response.body)).encode()),
        *response.headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
