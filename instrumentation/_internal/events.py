"""Product events: OTel event records (log records with ``event_name``), never trace-sampled."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from time import time_ns
from typing import Any

from opentelemetry.context import Context

from instrumentation import semconv
from instrumentation._internal import pipeline
from instrumentation._internal.guard import guarded
from instrumentation._internal.identity import identity_attributes


def emit_event(name: str, attributes: Mapping[str, Any], event_id: str, ctx: Context | None = None) -> None:
    """Emit event record ``name`` in ``ctx`` (default: current) with the identity and ``event_id``."""
    record_attributes = identity_attributes(ctx)
    record_attributes.update(attributes)
    record_attributes[semconv.EVENT_ID] = event_id
    pipeline.current().event_logger.emit(
        event_name=name, attributes=record_attributes, context=ctx, timestamp=time_ns()
    )


def emit_outcome(name: str, attributes: Mapping[str, Any], ctx: Context) -> None:
    """The outcome record of an unsampled operation: carries the span's ids, no random event id.

    The collector derives its PostHog uuid from ``trace_id:span_id:<name>`` exactly as it does for a
    sampled operation span, so whichever form arrives, the event is the same one.
    """
    record_attributes = identity_attributes(ctx)
    record_attributes.update(attributes)
    pipeline.current().event_logger.emit(
        event_name=name, attributes=record_attributes, context=ctx, timestamp=time_ns()
    )


def track(event: str, properties: Mapping[str, Any] | None = None, /, **kwargs: Any) -> str:
    """Emit product event ``event``; returns its ``phonoglyph.event.id`` (a uuid4 string)."""
    event_id = str(uuid.uuid4())
    with guarded():
        attributes = dict(properties) if properties else {}
        attributes.update(kwargs)
        emit_event(event, attributes, event_id)
    return event_id
