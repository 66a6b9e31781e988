"""The PostHog event: the dict mapping produces, the JSON the outbox stores, the body exporters send.

A PostHog event is a plain dict in the ``/batch/`` wire format (docs/architecture.md "PostHog mapping")::

    {"event": str, "distinct_id": str, "properties": dict, "timestamp": ISO-8601 str, "uuid": str}

Delivery stores each event as ``encode_event(event)``; an event claimed back from the outbox is a
``StoredEvent``, which keeps those bytes so that an exporter sends them as they are. Both delivery and
the exporters import this module; an exporter never sees the outbox itself.
"""

from __future__ import annotations

import json
import json.encoder
import math
from collections.abc import Callable, Iterator, Mapping
from json.encoder import encode_basestring
from typing import Any

import orjson

__all__ = ["PostHogEvent", "StoredEvent", "encode_event", "encode_event_bytes"]

PostHogEvent = dict[str, Any]
"""An event in PostHog's ``/batch/`` wire format (keys above)."""


def encode_event(event: Mapping[str, Any]) -> str:
    """The compact JSON stored for an event (``encode_event_bytes`` as text); its UTF-8 length is the
    event's size."""
    return encode_event_bytes(event).decode()


def encode_event_bytes(event: Mapping[str, Any]) -> bytes:
    """The compact JSON stored for an event, as UTF-8 bytes.

    Always valid JSON: a non-finite float (which json.dumps would write as a bare NaN or Infinity)
    becomes null, as posthog-python's batch_post does. Mapping already turns them into strings. orjson
    encodes an event in about a tenth of the CPU json's C encoder takes; what it refuses (a key that is
    not a string, an integer over 64 bits) goes through json's encoder, which takes them. A
    ``StoredEvent`` gives its stored payload as it is.
    """
    if isinstance(event, StoredEvent):
        return event.payload
    try:
        return orjson.dumps(event)
    except TypeError:  # orjson.JSONEncodeError
        pass
    try:
        return _encode(event).encode()
    except ValueError:
        return _encode(_finite(event)).encode()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _c_encoder() -> Callable[[Any], str] | None:
    """json.dumps's own C encoder with ``_dumps``'s settings, made once rather than per call (None when
    the interpreter has none). Mapped events hold no reference cycles, so it keeps no markers."""
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:
        return None
    make = c_make_encoder(None, json.JSONEncoder().default, encode_basestring, None, ":", ",", False, False, False)
    return lambda value: "".join(make(value, 0))


_encode = _c_encoder() or _dumps


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


class StoredEvent(Mapping[str, Any]):
    """An event claimed from the outbox, read-only.

    ``payload`` is its stored JSON as UTF-8 bytes, for an exporter to send as it is; ``uuid``
    and ``size_bytes`` come from the row, and so does ``timestamp`` (the event's timestamp as
    stored beside it, for the delivery-lag gauge; None when the row did not keep it). The decoded
    event (any other key) is parsed on first use only, so delivery never decodes the events it sends.
    """

    __slots__ = ("uuid", "payload", "size_bytes", "timestamp", "_event")

    def __init__(self, uuid: str, payload: bytes, size_bytes: int, timestamp: str | None = None) -> None:
        self.uuid = uuid
        self.payload = payload
        self.size_bytes = size_bytes
        self.timestamp = timestamp
        self._event: PostHogEvent | None = None

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> StoredEvent:
        """Wrap an event dict as the outbox would store it (tests, replay)."""
        payload = encode_event_bytes(event)
        timestamp = event.get("timestamp")
        stored = cls(event["uuid"], payload, len(payload), timestamp if isinstance(timestamp, str) else None)
        stored._event = json.loads(payload)
        return stored

    @property
    def event(self) -> PostHogEvent:
        if self._event is None:
            self._event = json.loads(self.payload)
        return self._event

    def __getitem__(self, key: str) -> Any:
        if key == "uuid":
            return self.uuid
        if key == "timestamp" and self.timestamp:
            return self.timestamp
        return self.event[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.event)

    def __len__(self) -> int:
        return len(self.event)

    def __repr__(self) -> str:
        return f"StoredEvent({self.payload.decode()!r})"
