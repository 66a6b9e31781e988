"""OTLP/HTTP 1.x bodies ↔ messages: protobuf and OTLP/JSON requests, responses and error bodies.

Requests: gzip is inflated incrementally under a limit (a bomb stops at it). An empty body is an empty
request. A span, log record or metric that does not decode (nested over protobuf's or JSON's depth
limits, a bad id, invalid UTF-8) is left out alone and counted for ``partial_success``; only a request
whose framing cannot be read is a 400. OTLP/JSON writes trace and span ids as hex, which protobuf's
JSON mapping reads as base64, so they are converted first, at their places only; unknown fields are
ignored everywhere. Responses carry ``partial_success`` when items were rejected; errors are a
``google.rpc.Status`` in the request's encoding (docs/architecture.md "Collector HTTP").
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from isal import isal_zlib
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
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, ResourceMetrics, ScopeMetrics
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from collector.codecs.protowire import WIRE_LENGTH_DELIMITED, encode_varint, fields

__all__ = [
    "JSON",
    "PROTOBUF",
    "SIGNALS",
    "CodecError",
    "Decoded",
    "Signal",
    "decode",
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


class CodecError(Exception):
    """A body that cannot be decoded (``status`` 400) or is over a limit (413)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Signal:
    """One OTLP signal: its name (``traces``, ``logs``, ``metrics``), message types and shape.

    Every export request has the same shape: field 1 lists resource entries, a resource entry's field 2
    lists scope entries, a scope entry's field 2 lists the items (spans, log records, metrics)."""

    name: str
    request_type: type[Message]
    response_type: type[Message]
    partial_type: type[Message]
    rejected_field: str
    resource_type: type[Message]
    scope_type: type[Message]
    item_type: type[Message]
    item_name: str


SIGNALS = {
    "/v1/traces": Signal(
        "traces",
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
        ExportTracePartialSuccess,
        "rejected_spans",
        ResourceSpans,
        ScopeSpans,
        Span,
        "span",
    ),
    "/v1/logs": Signal(
        "logs",
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
        ExportLogsPartialSuccess,
        "rejected_log_records",
        ResourceLogs,
        ScopeLogs,
        LogRecord,
        "log record",
    ),
    "/v1/metrics": Signal(
        "metrics",
        ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
        ExportMetricsPartialSuccess,
        "rejected_data_points",
        ResourceMetrics,
        ScopeMetrics,
        Metric,
        "metric",
    ),
}
"""The signals by URL path."""


@dataclass
class Decoded:
    """A decoded export request and the items left out of it because they could not be decoded."""

    request: Message
    raw_body: bytes | None
    """The protobuf bytes ``request`` was parsed from (without the items left out); None for OTLP/JSON."""
    rejected: int = 0
    error_message: str = ""


_INFLATE_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]  # the stub calls it an instance


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """Inflate gzip (one or more members) incrementally, refusing to produce more than max_bytes."""
    pieces: list[bytes] = []
    total = 0
    pending = data
    while pending:
        inflater = isal_zlib.decompressobj(16 + isal_zlib.MAX_WBITS)  # ISA-L: about 3x less CPU than zlib
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
        except _INFLATE_ERROR as exc:
            raise CodecError(400, f"invalid gzip body: {exc}") from None
        if not inflater.eof:
            raise CodecError(400, "invalid gzip body: truncated")
        pending = inflater.unused_data
    return b"".join(pieces)


_MAX_REASONS = 3
_JSON_DEPTH_LIMIT = 400
"""OTLP/JSON nesting kept when the body is too deep for ``json.loads`` as a whole (its own limit is near
1,000 levels): a span, log record or metric holding deeper nesting is cut out and rejected alone."""
_TOO_DEEP = f"\x00phonoglyph.too-deep.{secrets.token_hex(8)}:"
"""Stands for a cut-out entry in the JSON document, followed by how many items it held (unguessable, so a
sender's string never passes for one)."""
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[{]+|[\]}]+')
"""A JSON string, or a run of opening or of closing brackets: brackets inside strings are not structure."""
_ID_KEYS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")
_METRIC_KINDS = ("gauge", "sum", "histogram", "exponentialHistogram", "exponential_histogram", "summary")


class _Rejections:
    def __init__(self) -> None:
        self.count = 0
        self.reasons: list[str] = []

    def add(self, count: int, reason: str) -> None:
        self.count += count
        if len(self.reasons) < _MAX_REASONS and reason not in self.reasons:
            self.reasons.append(reason)

    def decoded(self, request: Message, raw_body: bytes | None) -> Decoded:
        return Decoded(request, raw_body, self.count, "; ".join(self.reasons))


def decode(signal: Signal, body: bytes, *, is_json: bool) -> Decoded:
    """An export request from its (inflated) body, without the items that cannot be decoded (counted for
    ``partial_success``); CodecError(400) when the request itself cannot be. An empty body is an empty
    request (the OTLP/HTTP spec: it succeeds)."""
    if is_json:
        return _decode_json(signal, body)
    return _decode_protobuf(signal, body)


def decode_request(signal: Signal, body: bytes, *, is_json: bool) -> Message:
    """``decode``'s request alone."""
    return decode(signal, body, is_json=is_json).request


# -- protobuf ------------------------------------------------------------------------------------


def _decode_protobuf(signal: Signal, body: bytes) -> Decoded:
    message = signal.request_type()
    try:
        message.ParseFromString(body)
        return Decoded(message, body)
    except DecodeError as exc:
        error = exc
    # Something inside does not decode (nesting over protobuf's depth limit, invalid UTF-8...): walk the
    # framing and leave out the items that do not decode on their own.
    rejections = _Rejections()
    try:
        kept = _filter_entry(signal, body, 0, len(body), 0, rejections)[0]
        message = signal.request_type.FromString(kept)
    except (DecodeError, ValueError, IndexError):
        raise CodecError(400, f"undecodable {signal.name} body: {str(error)[:200]}") from None
    return rejections.decoded(message, kept)


def _filter_entry(
    signal: Signal, buf: bytes, start: int, end: int, level: int, rejections: _Rejections
) -> tuple[bytes, int]:
    """The request (level 0), a resource entry (1) or a scope entry (2) in ``buf[start:end]`` without the
    items that do not decode, and how many items it keeps. An entry whose own fields do not decode is
    left out with its items: (b"", 0)."""
    head: list[bytes] = []
    children: list[bytes] = []
    kept = 0
    children_field = 1 if level == 0 else 2
    for number, wire_type, key_start, value_start, field_end in fields(buf, start, end):
        if number != children_field or wire_type != WIRE_LENGTH_DELIMITED:
            head.append(buf[key_start:field_end])
        elif level < 2:
            child, child_kept = _filter_entry(signal, buf, value_start, field_end, level + 1, rejections)
            if child_kept or child:
                children.append(_delimited(children_field, child))
                kept += child_kept
        else:
            try:
                signal.item_type.FromString(buf[value_start:field_end])
            except DecodeError:
                rejections.add(1, f"a {signal.item_name} that does not decode (nested too deeply, invalid UTF-8...)")
            else:
                children.append(buf[key_start:field_end])
                kept += 1
    if level:
        entry_type = signal.resource_type if level == 1 else signal.scope_type
        try:
            entry_type.FromString(b"".join(head))
        except DecodeError:
            what = "resource" if level == 1 else "scope"
            rejections.add(kept, f"a {what} that does not decode (nested too deeply, invalid UTF-8...)")
            return b"", 0
    return b"".join(head) + b"".join(children), kept


def _delimited(field_number: int, payload: bytes) -> bytes:
    return encode_varint(field_number << 3 | WIRE_LENGTH_DELIMITED) + encode_varint(len(payload)) + payload


# -- OTLP/JSON -----------------------------------------------------------------------------------


def _decode_json(signal: Signal, body: bytes) -> Decoded:
    if not body.strip():
        return Decoded(signal.request_type(), None)
    try:
        try:
            document = json.loads(body)
        except RecursionError:
            cut = _cut_deep_items(signal, body)
            if cut is None:
                raise CodecError(400, f"undecodable {signal.name} body: nested too deeply") from None
            document = json.loads(cut)
    except (ValueError, RecursionError) as exc:
        raise CodecError(400, f"undecodable {signal.name} body: {str(exc)[:200]}") from None
    if not isinstance(document, dict):
        raise CodecError(400, "the JSON body must be an object")
    request = signal.request_type()
    rejections = _Rejections()
    resources_field = request.DESCRIPTOR.fields_by_number[1]
    scopes_field = signal.resource_type.DESCRIPTOR.fields_by_number[2]
    items_field = signal.scope_type.DESCRIPTOR.fields_by_number[2]
    resources = getattr(request, resources_field.name)
    for resource_entry in _entries(document, resources_field):
        scope_entries = _entries(resource_entry, scopes_field)
        resource = resources.add()
        reason = _parse(resource_entry, resource)
        if reason:
            del resources[-1]
            count = sum(_count(scope, items_field) for scope in scope_entries) + _count(resource_entry, None)
            rejections.add(count, f"a resource entry that does not decode: {reason}")
            continue
        scopes = getattr(resource, scopes_field.name)
        for scope_entry in scope_entries:
            item_entries = _entries(scope_entry, items_field)
            scope = scopes.add()
            reason = _parse(scope_entry, scope)
            if reason:
                del scopes[-1]
                rejections.add(len(item_entries) + _count(scope_entry, None), f"a scope that does not decode: {reason}")
                continue
            items = getattr(scope, items_field.name)
            for item_entry in item_entries:
                item = items.add()
                reason = _ids_to_base64(signal, item_entry) or _parse(item_entry, item)
                if reason:
                    del items[-1]
                    rejections.add(1, f"a {signal.item_name} that does not decode: {reason}")
    return rejections.decoded(request, None)


def _entries(node: Any, field: FieldDescriptor) -> list[Any]:
    """The list under ``field`` (OTLP/JSON's camelCase name or the proto name), taken out of ``node``."""
    if not isinstance(node, dict):
        return []
    value = node.pop(field.json_name, None)
    snake = node.pop(field.name, None)
    if value is None:
        value = snake
    if value is None:
        return []
    if not isinstance(value, list):
        raise CodecError(400, f"undecodable body: {field.json_name} is not a list")
    return value


def _count(node: Any, items_field: FieldDescriptor | None) -> int:
    """Items a rejected entry held: its list under ``items_field``, or what a cut-out entry recorded."""
    if isinstance(node, str) and node.startswith(_TOO_DEEP):
        return int(node[len(_TOO_DEEP) :])
    if items_field is not None and isinstance(node, dict):
        items = node.get(items_field.json_name, node.get(items_field.name))
        if isinstance(items, list):
            return len(items)
    return 0


def _parse(node: Any, message: Message) -> str:
    """Parse a JSON object into ``message`` (unknown fields ignored); the reason it cannot be, or ''."""
    if isinstance(node, str) and node.startswith(_TOO_DEEP):
        return f"nested over {_JSON_DEPTH_LIMIT} levels"
    if not isinstance(node, dict):
        return "not a JSON object"
    try:
        json_format.ParseDict(node, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        return str(exc)[:200] or type(exc).__name__
    return ""


def _ids_to_base64(signal: Signal, item: Any) -> str:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping wants base64. Converted at their
    places only (a span and its links, a log record, a metric's exemplars): a key of that name anywhere
    else is some other field's, ignored or parsed as it is. The reason an id is not hex, or ''."""
    if not isinstance(item, dict):
        return ""
    nodes: list[Any] = [item]
    if signal.name == "traces":
        nodes.extend(_list(item, "links"))
    elif signal.name == "metrics":
        for kind in _METRIC_KINDS:
            data = item.get(kind)
            if isinstance(data, dict):
                for point in _list(data, "dataPoints", "data_points"):
                    if isinstance(point, dict):
                        nodes.extend(_list(point, "exemplars"))
    for node in nodes:
        if not isinstance(node, dict):
            continue
        for key in _ID_KEYS:
            value = node.get(key)
            if isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    return f"{key} is not hex"
    return ""


def _list(node: dict[str, Any], *keys: str) -> list[Any]:
    for key in keys:
        value = node.get(key)
        if isinstance(value, list):
            return value
    return []


def _cut_deep_items(signal: Signal, body: bytes) -> bytes | None:
    """The body with every entry that nests deeper than ``_JSON_DEPTH_LIMIT`` replaced by a ``_TOO_DEEP``
    string: the item (span, log record, metric) holding it, else its scope entry, else its resource entry.
    None when the deep part is outside them. One pass over the body's strings and brackets."""
    keys = {}
    descriptors = (
        signal.request_type.DESCRIPTOR.fields_by_number[1],
        signal.resource_type.DESCRIPTOR.fields_by_number[2],
        signal.scope_type.DESCRIPTOR.fields_by_number[2],
    )
    for depth, field in zip((2, 4, 6), descriptors, strict=True):
        keys[depth] = {f'"{field.json_name}"'.encode(), f'"{field.name}"'.encode()}
    depth = 0
    last_string = (0, 0)
    in_shape = [True] * 8  # in_shape[d]: the containers open down to depth d are OTLP's request shape
    starts = [0] * 8
    held = [0] * 8  # items seen since the entry at depth 3 or 5 opened
    cutting = 0
    cuts: list[tuple[int, int, int]] = []
    for match in _JSON_TOKEN.finditer(body):
        start, end = match.span()
        byte = body[start]
        if byte == 0x22:  # a string: the last one before a bracket is that value's key
            last_string = (start, end)
            continue
        if byte in (0x5B, 0x7B):  # a run of [ and {: one by one down to depth 7, then all at once
            position = start
            while position < end and depth < 7:
                depth += 1
                in_shape[depth] = in_shape[depth - 1] and (
                    depth not in keys or body[last_string[0] : last_string[1]] in keys[depth]
                )
                starts[depth] = position
                if depth in (3, 5):
                    held[depth] = 0
                elif depth == 7 and in_shape[7]:
                    held[3] += 1
                    held[5] += 1
                position += 1
            depth += end - position
            if depth > _JSON_DEPTH_LIMIT and not cutting:
                cutting = next((d for d in (7, 5, 3) if in_shape[d]), 0)
                if not cutting:
                    return None
        else:  # a run of ] and }: all at once down to depth 7 (a cut ends at depth 7 or above)
            bulk = min(end - start, max(0, depth - 7))
            depth -= bulk
            for position in range(start + bulk, end):
                if depth == cutting:
                    cuts.append((starts[depth], position + 1, 1 if depth == 7 else held[depth]))
                    cutting = 0
                depth -= 1
    pieces: list[bytes] = []
    position = 0
    for start, end, count in cuts:
        pieces.append(body[position:start])
        pieces.append(json.dumps(f"{_TOO_DEEP}{count}").encode())
        position = end
    pieces.append(body[position:])
    return b"".join(pieces)


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
