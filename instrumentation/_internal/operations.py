"""operation(): a span tagged ``phonoglyph.operation``, its start and outcome events, its duration.

Analytics-safe sampling: the ``<name>_started`` event record is emitted at every start. At the end,
a sampled span carries the outcome itself (the collector maps it); an unsampled one emits the
``<name>_completed`` / ``<name>_failed`` event record instead, with the span's trace and span ids.
Exactly one outcome leaves the process either way, and nothing is force-sampled (no orphans).

An operation left with :class:`OperationAbandoned` has no analytics outcome at all: its work passed to
another attempt (a job another worker claimed after this one's lease ran out), which reports the one
outcome of that work. Its span ends with ``phonoglyph.outcome=abandoned``, which the collector maps to no
event.
"""

from __future__ import annotations

import functools
import inspect
import time
import uuid
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from instrumentation import semconv
from instrumentation._internal import pipeline
from instrumentation._internal.events import emit_event, emit_outcome
from instrumentation._internal.guard import guarded
from instrumentation._internal.identity import identity_attributes

FuncT = TypeVar("FuncT", bound=Callable[..., Any])

EXCEPTION_CONTEXT_ATTR = "__phonoglyph_context__"
"""Set on an exception leaving an operation (innermost wins); Sentry's before_send reads it."""


class OperationAbandoned(Exception):
    """Raise it inside an operation whose work another attempt now owns: the operation ends with no
    ``<name>_completed`` or ``<name>_failed`` (that attempt reports one), and it is not an error. The
    exception is re-raised unchanged, like any other."""


_CONTEXT_KEY_PREFIXES = ("phonoglyph.",)
_CONTEXT_KEYS = frozenset(semconv.AUDIO_ATTRIBUTES)


class UnsampledOperationSpan(NonRecordingSpan):
    """The span of an unsampled operation: exports nothing, but keeps the attributes the code sets,
    so the outcome event record can carry them."""

    def __init__(self, span_context: SpanContext, attributes: dict[str, Any]) -> None:
        super().__init__(span_context)
        self.attributes = attributes

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        self.attributes.update(attributes)


class _Active:
    """One running operation (operation objects are reusable as decorators, so state lives here)."""

    __slots__ = ("name", "span", "ctx", "token", "started_at_s")

    def __init__(self, name: str, attributes: dict[str, Any], started_event: bool) -> None:
        self.name = name
        started_at_s = time.perf_counter()
        span: Span = pipeline.current().tracer.start_span(name, attributes=attributes)
        if not span.is_recording():
            span = UnsampledOperationSpan(span.get_span_context(), attributes)
        self.span = span
        self.ctx: Context = trace.set_span_in_context(span)
        self.started_at_s = started_at_s
        if started_event:
            emit_event(name + semconv.STARTED_SUFFIX, attributes, str(uuid.uuid4()), self.ctx)
        self.token = context.attach(self.ctx)

    def end(self, exc: BaseException | None) -> None:
        span = self.span
        duration_s = time.perf_counter() - self.started_at_s
        if exc is None:
            outcome = semconv.OUTCOME_COMPLETED
            span.set_attribute(semconv.OUTCOME, outcome)
        elif isinstance(exc, OperationAbandoned):
            span.set_attribute(semconv.OUTCOME, semconv.OUTCOME_ABANDONED)
            span.end()
            return
        else:
            outcome = semconv.OUTCOME_FAILED
            error_type = type(exc).__qualname__
            span.set_attributes({semconv.OUTCOME: outcome, semconv.ERROR_TYPE: error_type})
            if span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, error_type))
            if getattr(exc, EXCEPTION_CONTEXT_ATTR, None) is None:
                _set_exception_context(exc, self.name, span, self.ctx)
        sampled = span.get_span_context().trace_flags.sampled
        if not sampled:
            attributes = dict(_attributes_of(span))
            attributes[semconv.DURATION_MS] = duration_s * 1000.0
            emit_outcome(self.name + ("_" + outcome), attributes, self.ctx)
        span.end()
        pipeline.current().duration_histogram.record(
            duration_s, {semconv.OPERATION: self.name, semconv.OUTCOME: outcome}
        )

    def detach(self) -> None:
        context.detach(self.token)


def _attributes_of(span: Span) -> Mapping[str, Any]:
    return getattr(span, "attributes", None) or {}


def _set_exception_context(exc: BaseException, name: str, span: Span, ctx: Context) -> None:
    span_context = span.get_span_context()
    details: dict[str, Any] = {
        "operation": name,
        "trace_id": trace.format_trace_id(span_context.trace_id),
        "span_id": trace.format_span_id(span_context.span_id),
        semconv.USER_ID: None,
        semconv.SESSION_ID: None,
    }
    details.update(identity_attributes(ctx))
    for key, value in _attributes_of(span).items():
        if key in _CONTEXT_KEYS or key.startswith(_CONTEXT_KEY_PREFIXES):
            details[key] = value
    try:
        setattr(exc, EXCEPTION_CONTEXT_ATTR, details)
    except (AttributeError, TypeError):  # exceptions with __slots__ cannot carry it
        pass


class operation:
    """A Phonoglyph operation: ``with operation("render", {...}) as span:`` or ``@operation("render")``.

    The block's exception is recorded on the span, tagged, and re-raised unchanged.
    ``started_event=False`` leaves out the ``<name>_started`` event record, for an operation whose
    start a product event of that name already marks (Phonoglyph's ``render_started``, emitted by
    the api when credits are spent; the render itself runs later in the worker).
    """

    __slots__ = ("_name", "_attributes", "_started_event", "_active")

    def __init__(
        self,
        name: str,
        attributes: Mapping[str, Any] | None = None,
        /,
        *,
        started_event: bool = True,
        **kwargs: Any,
    ) -> None:
        self._name = name
        self._started_event = started_event
        merged: dict[str, Any] = dict(attributes) if attributes else {}
        merged.update(kwargs)
        merged[semconv.OPERATION] = name
        self._attributes = merged
        self._active: list[_Active | None] = []

    def _start(self) -> Span:
        active: _Active | None = None
        with guarded():
            active = _Active(self._name, dict(self._attributes), self._started_event)
        self._active.append(active)
        return active.span if active is not None else trace.INVALID_SPAN

    def _end(self, exc: BaseException | None) -> None:
        active = self._active.pop()
        if active is None:
            return
        try:
            with guarded():
                active.end(exc)
        finally:
            active.detach()

    def __enter__(self) -> Span:
        return self._start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._end(exc)

    async def __aenter__(self) -> Span:
        return self._start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._end(exc)

    def __call__(self, func: FuncT) -> FuncT:
        name, attributes, started_event = self._name, self._attributes, self._started_event
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with operation(name, attributes, started_event=started_event):
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with operation(name, attributes, started_event=started_event):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]
