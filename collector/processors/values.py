"""OTLP values → JSON-ready Python values, and OTLP times → PostHog timestamps."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["any_value", "attributes_dict", "iso_timestamp"]


def any_value(value: AnyValue) -> Any:
    """An attribute value as JSON can hold it: bytes as hex, a non-finite double as its text."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    if kind == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else str(number)  # JSON has no NaN or Infinity
    return getattr(value, kind)


def attributes_dict(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    """Attributes as a dict (the last of a repeated key wins)."""
    return {kv.key: any_value(kv.value) for kv in attributes}


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
