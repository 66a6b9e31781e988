"""OTLP/HTTP 1.x bodies ↔ messages: protobuf and OTLP/JSON requests, responses and error bodies.

Requests: gzip is inflated incrementally under a limit (a bomb stops at it); OTLP/JSON writes trace and
span ids as hex, which protobuf's JSON mapping reads as base64, so they are converted first; unknown
fields are ignored. Responses carry ``partial_success`` when items were rejected; errors are a
``google.rpc.Status`` in the request's encoding (docs/architecture.md "Collector HTTP").
"""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass
from typing import Any

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

from collector.codecs.protowire import encode_varint

__all__ = [
    "JSON",
    "PROTOBUF",
    "SIGNALS",
    "CodecError",
    "Signal",
    "decode_request",
    "encode_response",
    "gunzip",
    "status_body",
]

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


class CodecError(Exception):
    """A body that cannot be decoded (``status`` 400) or is over a limit (413)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Signal:
    """One OTLP signal: its name (``traces``, ``logs``, ``metrics``) and message types."""

    name: str
    request_type: type[Message]
    response_type: type[Message]
    partial_type: type[Message]
    rejected_field: str


SIGNALS = {
    "/v1/traces": Signal(
        "traces", ExportTraceServiceRequest, ExportTraceServiceResponse, ExportTracePartialSuccess, "rejected_spans"
    ),
    "/v1/logs": Signal(
        "logs", ExportLogsServiceRequest, ExportLogsServiceResponse, ExportLogsPartialSuccess, "rejected_log_records"
    ),
    "/v1/metrics": Signal(
        "metrics",
        ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
        ExportMetricsPartialSuccess,
        "rejected_data_points",
    ),
}
"""The signals by URL path."""


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
                    raise CodecError(413, f"decompressed body over {max_bytes} bytes")
                pieces.append(piece)
                pending = inflater.unconsumed_tail
                if inflater.eof or not pending:
                    break
        except zlib.error as exc:
            raise CodecError(400, f"invalid gzip body: {exc}") from None
        if not inflater.eof:
            raise CodecError(400, "invalid gzip body: truncated")
        pending = inflater.unused_data
    return b"".join(pieces)


def _hex_ids_to_base64(node: Any) -> Any:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping wants base64."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise CodecError(400, f"{key} is not hex") from None
            elif isinstance(value, (dict, list)):
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)):
                _hex_ids_to_base64(item)
    return node


def decode_request(signal: Signal, body: bytes, *, is_json: bool) -> Message:
    """An export request from its (inflated) body; CodecError(400) when it cannot be decoded."""
    message = signal.request_type()
    try:
        if is_json:
            document = json.loads(body)
            if not isinstance(document, dict):
                raise CodecError(400, "the JSON body must be an object")
            json_format.ParseDict(_hex_ids_to_base64(document), message, ignore_unknown_fields=True)
        else:
            message.ParseFromString(body)
    except (DecodeError, json_format.ParseError, ValueError, RecursionError) as exc:
        raise CodecError(400, f"undecodable {signal.name} body: {str(exc)[:200]}") from None
    return message


def encode_response(signal: Signal, *, rejected: int = 0, error_message: str = "", is_json: bool) -> bytes:
    """The success answer: an empty export response, or one with ``partial_success`` when items were rejected."""
    response = signal.response_type()
    if rejected:
        partial = signal.partial_type(error_message=error_message)
        setattr(partial, signal.rejected_field, rejected)
        response.partial_success.CopyFrom(partial)
    if is_json:
        return json.dumps(json_format.MessageToDict(response)).encode()
    return response.SerializeToString()


def status_body(status: int, message: str, *, is_json: bool) -> bytes:
    """A ``google.rpc.Status`` (code, message) for an HTTP error status, hand-encoded: the proto is two fields."""
    code = _STATUS_CODES.get(status, _INVALID_ARGUMENT)
    if is_json:
        return json.dumps({"code": code, "message": message}).encode()
    text = message.encode()
    return bytes([0x08, code, 0x12]) + encode_varint(len(text)) + text
