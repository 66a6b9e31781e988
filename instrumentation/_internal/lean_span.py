"""The server span without the SDK's per-span machinery: one small object per request.

An SDK ``Span`` takes a lock, a ``BoundedAttributes`` and a ``SpanContext`` validation on every
request, calls each span processor twice and builds a second ``ReadableSpan`` when it ends.
:class:`LeanSpan` is the same span for everything that reads it (it is a ``ReadableSpan`` and an
OTel API ``Span``): children, propagation, Sentry and the exporters see no difference. It is used
only when the pipeline is ours (:class:`LeanSpans`): the provider's processors are exactly ours (the
identity processor and export queues), so nothing else expects to be called when a span starts or
ends. Sampling is the provider's sampler; identity is copied from the baggage when the span starts,
as the identity processor does; an ended, sampled span goes straight to the export queues.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.attributes import _clean_attribute_value
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util import types

from instrumentation import semconv
from instrumentation._internal.identity import IdentitySpanProcessor, identity_attributes

_logger = logging.getLogger(__name__)

MAX_ATTRIBUTES = 128
MAX_EVENTS = 128
"""The SDK's default span limits."""
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
EMPTY_TRACE_STATE = TraceState()
UNSET_STATUS = Status(StatusCode.UNSET)
_PLAIN_VALUE_TYPES = (str, bool, int, float)
_ROUTE = semconv.HTTP_ROUTE
_STATUS_CODE = semconv.HTTP_RESPONSE_STATUS_CODE


class LeanSpan(trace.Span, ReadableSpan):
    """A recording span whose fields are set directly (no ``ReadableSpan.__init__``, no lock: a span
    is written by the request that owns it). Ended and sampled, it is handed to ``sinks``."""

    def __init__(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        parent: SpanContext | None,
        trace_state: TraceState,
        kind: SpanKind,
        attributes: dict[str, Any],
        start_time: int,
        factory: LeanSpans,
    ) -> None:
        self._name = name
        self._trace_id = trace_id
        self._span_id = span_id
        self._span_context: SpanContext | None = None
        self._trace_state = trace_state
        self._parent = parent
        self._kind = kind
        self._attributes = attributes
        self._dropped_attributes = 0
        self._events: list[Event] = []
        self._dropped_events = 0
        self._links = ()
        self._status = UNSET_STATUS
        self._start_time = start_time
        self._end_time: int | None = None
        self._resource = factory.resource
        self._instrumentation_scope = factory.instrumentation_scope
        self._instrumentation_info = None
        self._sinks = factory.sinks

    @property
    def _context(self) -> SpanContext:  # type: ignore[override]  # ReadableSpan's field, built when read
        span_context = self._span_context
        if span_context is None:
            span_context = self._span_context = SpanContext(
                self._trace_id, self._span_id, is_remote=False, trace_flags=_SAMPLED, trace_state=self._trace_state
            )
        return span_context

    def get_span_context(self) -> SpanContext:
        return self._context

    @property
    def dropped_attributes(self) -> int:
        return self._dropped_attributes

    @property
    def dropped_events(self) -> int:
        return self._dropped_events

    @property
    def dropped_links(self) -> int:
        return 0

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if self._end_time is not None:
            return
        if type(key) is not str or not key:
            _logger.warning("invalid key `%s`. must be non-empty string. Dropping key from attributes.", key)
            self._dropped_attributes += 1
            return
        if type(value) not in _PLAIN_VALUE_TYPES:
            value = _clean_attribute_value(value, None)  # the SDK's rules (sequences become tuples, ...)
        attributes: dict[str, Any] = self._attributes  # type: ignore[assignment]  # ReadableSpan's is a Mapping
        if key not in attributes and len(attributes) >= MAX_ATTRIBUTES:
            self._dropped_attributes += 1
            return
        attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self._end_time is not None:
            return
        if len(self._events) >= MAX_EVENTS:
            self._dropped_events += 1
            return
        clean = _clean_attribute_value(dict(attributes or {}), None)
        self._events.append(Event(name, clean, timestamp if timestamp is not None else time.time_ns()))

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return  # OK is final (the SDK's rule)
        if isinstance(status, Status):
            if status.status_code is StatusCode.UNSET:
                return
            self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        Span.record_exception(self, exception, attributes, timestamp, escaped)  # type: ignore[arg-type]

    def end_request(self, name: str | None, route: str | None, status_code: int, status: Status | None) -> None:
        """The server-span layer's end of a request in one call: its name, ``http.route`` and response
        status code (when known), an error status, then :meth:`end`."""
        if self._end_time is None:
            if name is not None:
                self._name = name
            attributes: dict[str, Any] = self._attributes  # type: ignore[assignment]  # ReadableSpan's is a Mapping
            # a str and an int under keys of ours: set_attribute's checks, without the calls
            if route is not None:
                if len(attributes) < MAX_ATTRIBUTES or _ROUTE in attributes:
                    attributes[_ROUTE] = route
                else:
                    self._dropped_attributes += 1
            if status_code:
                if len(attributes) < MAX_ATTRIBUTES or _STATUS_CODE in attributes:
                    attributes[_STATUS_CODE] = status_code
                else:
                    self._dropped_attributes += 1
            if status is not None:
                self.set_status(status)
        self.end()

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            _logger.warning("Calling end() on an ended span.")
            return
        self._end_time = end_time if end_time is not None else time.time_ns()
        for put in self._sinks:
            put(self)

    @property
    def events(self) -> Sequence[Event]:
        return tuple(self._events)


class LeanSpans:
    """Starts :class:`LeanSpan` s for one TracerProvider while its processors are exactly ours; else
    :meth:`start` uses the SDK tracer."""

    def __init__(self, provider: TracerProvider, tracer: trace.Tracer, sink_types: tuple[type, ...]) -> None:
        self._provider = provider
        self._tracer = tracer
        self._sink_types = sink_types
        self.resource = provider.resource
        self.instrumentation_scope = getattr(tracer, "_instrumentation_scope", None)
        self.sinks: tuple[Callable[[ReadableSpan], None], ...] = ()
        self._processors: object = None
        self._lean = False
        sampler = provider.sampler
        self._default_sampling = (
            type(sampler) is ParentBased and sampler.get_description() == ParentBased(ALWAYS_ON).get_description()
        )  # the description names the root and all four delegates
        self._random_ids = type(provider.id_generator) is RandomIdGenerator

    def _refresh(self, processors: tuple[Any, ...]) -> None:
        """Lean only while every processor is ours; the export queues' ``put`` are the sinks."""
        self._processors = processors
        self._lean = all(type(p) is IdentitySpanProcessor or isinstance(p, self._sink_types) for p in processors)
        self.sinks = tuple(p.put_span for p in processors if isinstance(p, self._sink_types))  # type: ignore[attr-defined]

    def start(self, name: str, parent_context: Context, kind: SpanKind, attributes: dict[str, Any]) -> trace.Span:
        """A started span (not attached); ``attributes`` is taken over."""
        processors = self._provider._active_span_processor._span_processors
        if processors is not self._processors:
            self._refresh(processors)
        if not self._lean:
            return self._tracer.start_span(name, context=parent_context, kind=kind, attributes=attributes)
        parent: SpanContext | None = None
        if parent_context:  # an empty context (a caller with no trace, no baggage) has no parent
            parent = trace.get_current_span(parent_context).get_span_context()
            if parent is not None and not parent.is_valid:
                parent = None
        trace_id = parent.trace_id if parent is not None else self._trace_id()
        if self._default_sampling:
            sampled = parent is None or parent.trace_flags.sampled
            trace_state = parent.trace_state if parent is not None else EMPTY_TRACE_STATE
        else:
            result = self._provider.sampler.should_sample(parent_context, trace_id, name, kind, attributes)
            sampled = result.decision.is_sampled()
            trace_state = result.trace_state or EMPTY_TRACE_STATE
            if sampled and result.attributes:
                attributes.update(result.attributes)
        span_id = self._span_id()
        if not sampled:
            return trace.NonRecordingSpan(
                SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(0), trace_state=trace_state)
            )
        if parent_context:
            identity = identity_attributes(parent_context)
            if identity:
                attributes.update(identity)
        return LeanSpan(name, trace_id, span_id, parent, trace_state, kind, attributes, time.time_ns(), self)

    def _trace_id(self) -> int:
        if self._random_ids:
            return random.getrandbits(128) or 1
        return self._provider.id_generator.generate_trace_id()

    def _span_id(self) -> int:
        if self._random_ids:
            return random.getrandbits(64) or 1
        return self._provider.id_generator.generate_span_id()
