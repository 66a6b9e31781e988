"""OTLP values → JSON-ready Python values, and OTLP times → PostHog timestamps.

Values nested in arrays and maps are bounded here, because nothing downstream walks them for size: a
string is cut to ``MAX_STRING_CHARS`` characters plus ``…`` (the scrubber cuts top-level strings the
same way and lists their paths), an array or map keeps its first ``MAX_COLLECTION_ITEMS`` entries, and
an array or map nested deeper than ``MAX_VALUE_DEPTH`` levels becomes the string ``…``. So an event
stays well under PostHog's size limits whatever a sender nests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from instrumentation.scrubbing import MAX_STRING_CHARS

__all__ = [
    "CUT",
    "MAX_COLLECTION_ITEMS",
    "MAX_STRING_CHARS",
    "MAX_VALUE_DEPTH",
    "any_value",
    "attributes_dict",
    "iso_timestamp",
]

CUT: Final = "…"
"""Appended to a cut string; stands alone for a value nested too deep."""
MAX_COLLECTION_ITEMS: Final = 128
"""Entries kept of an array or map value (the OTel SDKs' default attribute count limit)."""
MAX_VALUE_DEPTH: Final = 8
"""Levels of arrays and maps kept in one attribute value (an attribute's own array or map is level 1)."""


def any_value(value: AnyValue) -> Any:
    """An attribute value as JSON can hold it: bytes as hex, a non-finite double as its text.

    A top-level string is returned whole (the scrubber cuts it and records that it did); what is nested
    in arrays and maps is bounded (module docstring)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value" or kind == "kvlist_value":
        return _collection(value, kind, 1)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    if kind == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else str(number)  # JSON has no NaN or Infinity
    return getattr(value, kind)


def _collection(value: AnyValue, kind: str, depth: int) -> Any:
    if depth > MAX_VALUE_DEPTH:
        return CUT
    if kind == "array_value":
        return [_nested(item, depth) for item in value.array_value.values[:MAX_COLLECTION_ITEMS]]
    result: dict[str, Any] = {}
    for kv in value.kvlist_value.values:
        if kv.key not in result:  # the first of a repeated key wins, as in attributes_dict
            if len(result) == MAX_COLLECTION_ITEMS:
                break
            result[kv.key] = _nested(kv.value, depth)
    return result


def _nested(value: AnyValue, depth: int) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        text = value.string_value
        return text if len(text) <= MAX_STRING_CHARS else text[:MAX_STRING_CHARS] + CUT
    if kind == "array_value" or kind == "kvlist_value":
        return _collection(value, kind, depth + 1)
    if kind == "bytes_value":
        data = value.bytes_value[: MAX_STRING_CHARS // 2 + 1]
        return data.hex() if len(data) <= MAX_STRING_CHARS // 2 else data[:-1].hex() + CUT
    return any_value(value)


def attributes_dict(attributes: Sequence[KeyValue]) -> dict[str, Any]:
    """Attributes as a dict. The first of a repeated key wins: OTLP says keys MUST be unique and leaves
    repeats undefined; the OpenTelemetry Collector's ``pcommon.Map.Get`` reads the first, and so do we."""
    result = {kv.key: any_value(kv.value) for kv in attributes}
    if len(result) == len(attributes):
        return result
    result = {}  # a key repeats: the rare case, walked again
    for kv in attributes:
        if kv.key not in result:
            result[kv.key] = any_value(kv.value)
    return result


_seconds_text: dict[int, str] = {}


def iso_timestamp(time_unix_nano: int) -> str:
    """Nanoseconds since the epoch → ``2026-11-28T04:36:12.123456Z`` (microseconds, UTC)."""
    seconds, micros = divmod(time_unix_nano // 1000, 1_000_000)
    text = _seconds_text.get(seconds)
    if text is None:
        if len(_seconds_text) > 4096:  # a small memo: events of one request share their seconds
            _seconds_text.clear()
        text = _seconds_text[seconds] = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{micros:06d}Z"
