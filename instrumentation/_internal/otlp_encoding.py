"""OTLP protobuf encoding of spans and log records, written straight to bytes (no message objects).

The SDK's ``encode_spans`` builds a tree of Python protobuf objects on the export thread, holding
the GIL all the while; this writer emits the same wire format (``ExportTraceServiceRequest``)
without those objects (docs/benchmarks.md has the figures). Resources and instrumentation scopes are
encoded once per batch, attribute keys once per process (bounded cache).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind

from instrumentation._internal.lean_span import EMPTY_TRACE_STATE, LeanSpan
from instrumentation._internal.lean_span import UNSET_STATUS as _UNSET

_FIXED64 = struct.Struct("<Q")
_FIXED32 = struct.Struct("<I")
_DOUBLE = struct.Struct("<d")
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_MAX_CACHED_KEYS = 4096


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(field_tag: bytes, payload: bytes) -> bytes:
    return field_tag + _varint(len(payload)) + payload


# field tags: (field_number << 3) | wire_type; 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32
_TAG = {number: {wire: _varint((number << 3) | wire) for wire in (0, 1, 2, 5)} for number in range(1, 17)}


def _any_value(value: Any) -> bytes:
    if isinstance(value, str):
        return _delimited(_TAG[1][2], value.encode("utf-8"))
    if isinstance(value, bool):
        return _TAG[2][0] + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return _TAG[3][0] + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return _TAG[4][1] + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return _delimited(_TAG[7][2], value)
    if isinstance(value, Sequence):
        return _delimited(_TAG[5][2], b"".join(_delimited(_TAG[1][2], _any_value(item)) for item in value))
    if isinstance(value, Mapping):
        return _delimited(_TAG[6][2], b"".join(_key_value(str(k), v, _TAG[1][2]) for k, v in value.items()))
    if value is None:
        return b""
    raise TypeError(f"cannot encode attribute value of type {type(value).__name__}")


_KEY_CACHE: dict[str, bytes] = {}
_PAIR_CACHES: dict[bytes, dict[tuple[str, str | int], bytes]] = {}
"""Per field tag: encoded ``KeyValue`` fields of low-cardinality pairs (method, route, status...)."""
_MAX_CACHED_PAIRS = 8192
_MAX_CACHED_VALUE_CHARS = 64


def _key_value(key: str, value: Any, field_tag: bytes) -> bytes:
    encoded_key = _KEY_CACHE.get(key)
    if encoded_key is None:
        encoded_key = _delimited(_TAG[1][2], key.encode("utf-8"))
        if len(_KEY_CACHE) < _MAX_CACHED_KEYS:
            _KEY_CACHE[key] = encoded_key
    return _delimited(field_tag, encoded_key + _delimited(_TAG[2][2], _any_value(value)))


def _plain(attributes: Any) -> Any:
    """The dict inside the SDK's BoundedAttributes (iterating the wrapper costs more)."""
    inner = getattr(attributes, "_dict", None)
    return inner if type(inner) is dict else attributes


def _attributes(attributes: Mapping[str, Any] | None, field_tag: bytes) -> bytes:
    """Repeated KeyValue fields; a pair with a short string or an int value is encoded once (a string
    never equals an int, so the two share a cache; bools, floats and subclasses are not cached)."""
    if not attributes:
        return b""
    cache = _PAIR_CACHES.get(field_tag)
    if cache is None:
        cache = _PAIR_CACHES[field_tag] = {}
    parts = []
    for key, value in _plain(attributes).items():
        value_type = type(value)
        if (value_type is str and len(value) <= _MAX_CACHED_VALUE_CHARS) or value_type is int:
            encoded = cache.get((key, value))
            if encoded is None:
                encoded = _key_value(key, value, field_tag)
                if len(cache) < _MAX_CACHED_PAIRS:
                    cache[(key, value)] = encoded
            parts.append(encoded)
        else:
            parts.append(_key_value(key, value, field_tag))
    return b"".join(parts)


def _flags(parent: SpanContext | None) -> int:
    return _HAS_IS_REMOTE | _IS_REMOTE if parent is not None and parent.is_remote else _HAS_IS_REMOTE


_TRACE_ID_FIELD = _TAG[1][2] + b"\x10"
_SPAN_ID_FIELD = _TAG[2][2] + b"\x08"
_PARENT_SPAN_ID_FIELD = _TAG[4][2] + b"\x08"
_KIND_FIELDS = {kind: _TAG[6][0] + _varint(kind.value + 1) for kind in SpanKind}
_SERVER = SpanKind.SERVER
_SERVER_KIND_FIELD = _KIND_FIELDS[_SERVER]
_TIMES = struct.Struct("<BQBQ")  # start_time_unix_nano (7), end_time_unix_nano (8): fixed64 each
_START_TAG, _END_TAG = _TAG[7][1][0], _TAG[8][1][0]
_STATUS_UNSET = _TAG[15][2] + b"\x00"
_FLAGS_LOCAL = _TAG[16][5] + _FIXED32.pack(_HAS_IS_REMOTE)
_FLAGS_REMOTE = _TAG[16][5] + _FIXED32.pack(_HAS_IS_REMOTE | _IS_REMOTE)
_NAME_CACHE: dict[str, bytes] = {}
_SPAN_ATTRIBUTES_TAG = _TAG[9][2]


def _name_field(name: str) -> bytes:
    encoded = _NAME_CACHE.get(name)
    if encoded is None:
        encoded = _delimited(_TAG[5][2], name.encode("utf-8"))
        if len(_NAME_CACHE) < _MAX_CACHED_KEYS:
            _NAME_CACHE[name] = encoded
    return encoded


def _status_field(status: Any) -> bytes:
    if status is _UNSET or (status.description is None and not status.status_code.value):
        return _STATUS_UNSET
    status_bytes = b""
    if status.description:
        status_bytes += _delimited(_TAG[2][2], status.description.encode("utf-8"))
    if status.status_code.value:
        status_bytes += _TAG[3][0] + _varint(status.status_code.value)
    return _delimited(_TAG[15][2], status_bytes)


def encode_span(span: ReadableSpan) -> bytes:
    """One span's ``Span`` message fields."""
    if type(span) is LeanSpan:
        return _lean_span(span, _attributes(span._attributes, _SPAN_ATTRIBUTES_TAG))
    context = span.context
    return _span_fields(
        context.trace_id, context.span_id, context.trace_state, span.parent, span.name, span.kind,
        span.start_time, span.end_time, _attributes(span.attributes, _SPAN_ATTRIBUTES_TAG),
        span.dropped_attributes, span.events, span.dropped_events, span.links, span.dropped_links, span.status,
    )  # fmt: skip


def _lean_span(span: LeanSpan, attributes: bytes) -> bytes:
    """A lean span's fields as they are (no property per field, its SpanContext never built), with its
    attributes already encoded."""
    return _span_fields(
        span._trace_id, span._span_id, span._trace_state, span._parent, span._name, span._kind,
        span._start_time, span._end_time, attributes, span._dropped_attributes, span._events,
        span._dropped_events, (), 0, span._status,
    )  # fmt: skip


def encode_pair(key: str, value: str | int) -> bytes:
    """A span attribute's ``KeyValue`` field, as :func:`encode_spans_request` writes it."""
    return _attributes({key: value}, _SPAN_ATTRIBUTES_TAG)


def encode_lean_span_of_known_pairs(span: LeanSpan, pairs: Mapping[tuple[str, Any], bytes]) -> bytes | None:
    """``span``'s bytes when each of its attributes is a str or an int whose ``KeyValue`` field is in
    ``pairs`` (by ``(key, value)``), and it has no event: else None, and nothing is encoded."""
    if span._events:
        return None
    parts = []
    attributes: Any = span._attributes or {}
    for key, value in attributes.items():
        value_type = type(value)
        if value_type is not str and value_type is not int:  # a bool equals an int: never looked up
            return None
        encoded = pairs.get((key, value))
        if encoded is None:
            return None
        parts.append(encoded)
    return _lean_span(span, b"".join(parts))


def _span_fields(
    trace_id: int,
    span_id: int,
    trace_state: Any,
    parent: SpanContext | None,
    name: str,
    kind: SpanKind,
    start_time: int | None,
    end_time: int | None,
    attributes: bytes,
    dropped_attributes: int,
    events: Sequence[Any],
    dropped_events: int,
    links: Sequence[Any],
    dropped_links: int,
    status: Any,
) -> bytes:
    parts = [_TRACE_ID_FIELD, trace_id.to_bytes(16, "big"), _SPAN_ID_FIELD, span_id.to_bytes(8, "big")]
    if trace_state is not EMPTY_TRACE_STATE and trace_state:
        parts.append(_delimited(_TAG[3][2], ",".join(f"{k}={v}" for k, v in trace_state.items()).encode()))
    if parent is not None:
        parts.append(_PARENT_SPAN_ID_FIELD)
        parts.append(parent.span_id.to_bytes(8, "big"))
    parts.append(_name_field(name))
    parts.append(_SERVER_KIND_FIELD if kind is _SERVER else _KIND_FIELDS[kind])  # an enum's hash is a call
    parts.append(_TIMES.pack(_START_TAG, start_time or 0, _END_TAG, end_time or 0))
    parts.append(attributes)
    if dropped_attributes:
        parts.append(_TAG[10][0] + _varint(dropped_attributes))
    for event in events:
        event_bytes = _TAG[1][1] + _FIXED64.pack(event.timestamp) + _delimited(_TAG[2][2], event.name.encode("utf-8"))
        event_bytes += _attributes(event.attributes, _TAG[3][2])
        if event.dropped_attributes:
            event_bytes += _TAG[4][0] + _varint(event.dropped_attributes)
        parts.append(_delimited(_TAG[11][2], event_bytes))
    if dropped_events:
        parts.append(_TAG[12][0] + _varint(dropped_events))
    for link in links:
        link_bytes = (
            _TRACE_ID_FIELD
            + link.context.trace_id.to_bytes(16, "big")
            + _SPAN_ID_FIELD
            + link.context.span_id.to_bytes(8, "big")
            + _attributes(link.attributes, _TAG[4][2])
        )
        if link.dropped_attributes:
            link_bytes += _TAG[5][0] + _varint(link.dropped_attributes)
        link_bytes += _TAG[6][5] + _FIXED32.pack(_flags(link.context))
        parts.append(_delimited(_TAG[13][2], link_bytes))
    if dropped_links:
        parts.append(_TAG[14][0] + _varint(dropped_links))
    parts.append(_STATUS_UNSET if status is _UNSET else _status_field(status))
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(parts)


def _resource(resource: Any) -> bytes:
    return _attributes(resource.attributes, _TAG[1][2])


def _scope(scope: Any) -> bytes:
    if scope is None:
        return b""
    encoded = _delimited(_TAG[1][2], scope.name.encode("utf-8"))
    if scope.version:
        encoded += _delimited(_TAG[2][2], scope.version.encode("utf-8"))
    encoded += _attributes(scope.attributes, _TAG[3][2])
    return encoded


def _log_record(readable: ReadableLogRecord) -> bytes:
    record = readable.log_record
    parts = []
    if record.timestamp:
        parts.append(_TAG[1][1] + _FIXED64.pack(record.timestamp))
    if record.severity_number is not None and record.severity_number.value:
        parts.append(_TAG[2][0] + _varint(record.severity_number.value))
    if record.severity_text:
        parts.append(_delimited(_TAG[3][2], record.severity_text.encode("utf-8")))
    parts.append(_delimited(_TAG[5][2], _any_value(record.body)))
    parts.append(_attributes(record.attributes, _TAG[6][2]))
    if readable.dropped_attributes:
        parts.append(_TAG[7][0] + _varint(readable.dropped_attributes))
    if record.trace_flags:
        parts.append(_TAG[8][5] + _FIXED32.pack(int(record.trace_flags)))
    if record.trace_id:
        parts.append(_TAG[9][2] + b"\x10" + record.trace_id.to_bytes(16, "big"))
    if record.span_id:
        parts.append(_TAG[10][2] + b"\x08" + record.span_id.to_bytes(8, "big"))
    if record.observed_timestamp:
        parts.append(_TAG[11][1] + _FIXED64.pack(record.observed_timestamp))
    if record.event_name:
        parts.append(_delimited(_TAG[12][2], record.event_name.encode("utf-8")))
    return b"".join(parts)


_ITEM_TAG = _TAG[2][2][0]
_ITEM_AND_TWO_BYTE_LENGTH = struct.Struct("<BBB")


def _grouped(items: Sequence[Any], encode_item: Any) -> bytes:
    """``Export*ServiceRequest`` bytes: items grouped by resource, then instrumentation scope.

    Field numbers are the same for traces and logs: request.resource_* = 1, resource = 1,
    scope_* = 2, schema_url = 3; scope = 1, items = 2, schema_url = 3.
    """
    groups: dict[int, tuple[Any, dict[int, tuple[Any, list[bytes]]]]] = {}
    for item in items:
        if type(item) is LeanSpan:  # its fields, not the ReadableSpan properties
            resource, scope = item._resource, item._instrumentation_scope
        else:
            resource, scope = item.resource, item.instrumentation_scope
        by_scope = groups.get(id(resource))
        if by_scope is None:
            by_scope = groups[id(resource)] = (resource, {})
        entry = by_scope[1].get(id(scope))
        if entry is None:
            entry = by_scope[1][id(scope)] = (scope, [])
        encoded = encode_item(item)
        size = len(encoded)
        if 0x80 <= size < 0x4000:  # most items: a two-byte length, written without a call
            entry[1].append(_ITEM_AND_TWO_BYTE_LENGTH.pack(_ITEM_TAG, (size & 0x7F) | 0x80, size >> 7) + encoded)
        else:
            entry[1].append(_delimited(_TAG[2][2], encoded))
    request = []
    for resource, scopes in groups.values():
        resource_items = [_delimited(_TAG[1][2], _resource(resource))]
        for scope, encoded_items in scopes.values():
            scope_items = _delimited(_TAG[1][2], _scope(scope)) + b"".join(encoded_items)
            if scope is not None and scope.schema_url:
                scope_items += _delimited(_TAG[3][2], scope.schema_url.encode("utf-8"))
            resource_items.append(_delimited(_TAG[2][2], scope_items))
        if resource.schema_url:
            resource_items.append(_delimited(_TAG[3][2], resource.schema_url.encode("utf-8")))
        request.append(_delimited(_TAG[1][2], b"".join(resource_items)))
    return b"".join(request)


def encode_spans_request(spans: Sequence[ReadableSpan], encode_item: Callable[[Any], bytes] = encode_span) -> bytes:
    """``ExportTraceServiceRequest`` bytes for ``spans``, each ``Span`` message's fields from ``encode_item``."""
    return _grouped(spans, encode_item)


def encode_logs_request(records: Sequence[ReadableLogRecord]) -> bytes:
    """``ExportLogsServiceRequest`` bytes for ``records`` (event records included: ``event_name``)."""
    return _grouped(records, _log_record)
