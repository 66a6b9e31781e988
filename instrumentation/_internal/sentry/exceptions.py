"""Link an exception to the span it left, so an error captured later still gets that span's trace.

The first OTel span that records an exception stamps it (``__phonoglyph_span__``: trace and span
ids, ``user.id`` / ``session.id``); :func:`operation` leaves its own context on an exception that
ends it (``__phonoglyph_context__``). ``before_send`` reads both through :func:`exception_details`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Final

from opentelemetry import baggage, trace
from opentelemetry.sdk.trace import Span

from instrumentation import semconv
from instrumentation._internal.operations import EXCEPTION_CONTEXT_ATTR

EXCEPTION_SPAN_ATTR: Final = "__phonoglyph_span__"
"""Set on an exception when the first OTel span records it: trace/span ids and identity.

An error captured after its span ended, outside it (the server logging what left the app, the app
logging an exception it caught higher up) still gets that span's trace id this way."""

MAX_EXCEPTION_CHAIN: Final = 10
"""How many causes (``__cause__`` / ``__context__``) are searched for a stamp."""


def stamp_exceptions_with_their_span() -> None:
    """Wrap ``Span.record_exception`` (once) so the first span that records an exception stamps it."""
    original = Span.record_exception
    if getattr(original, "_phonoglyph_stamps", False):
        return

    @functools.wraps(original)
    def record_exception(self: Span, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        if getattr(exception, EXCEPTION_SPAN_ATTR, None) is None:
            _stamp(exception, self)
        original(self, exception, *args, **kwargs)

    record_exception._phonoglyph_stamps = True  # type: ignore[attr-defined]
    Span.record_exception = record_exception  # type: ignore[method-assign]


def _stamp(exception: BaseException, span: Span) -> None:
    span_context = span.get_span_context()
    details: dict[str, Any] = {
        "trace_id": trace.format_trace_id(span_context.trace_id),
        "span_id": trace.format_span_id(span_context.span_id),
    }
    details.update(_identity(span.attributes))
    try:
        setattr(exception, EXCEPTION_SPAN_ATTR, details)
    except (AttributeError, TypeError):  # exceptions with __slots__ cannot carry it
        pass


def _identity(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """``user.id`` / ``session.id`` from span attributes, else from the current baggage."""
    found: dict[str, Any] = {}
    for key in (semconv.USER_ID, semconv.SESSION_ID):
        value = (attributes or {}).get(key) or baggage.get_baggage(key)
        if value:
            found[key] = str(value)
    return found


def exception_details(hint: Mapping[str, Any]) -> dict[str, Any]:
    """What the exception (or one it was raised from) carries: its span stamp, then its operation."""
    exc_info = hint.get("exc_info")
    exception = exc_info[1] if exc_info else None
    span_details: dict[str, Any] | None = None
    operation_details: dict[str, Any] | None = None
    for _ in range(MAX_EXCEPTION_CHAIN):
        if exception is None:
            break
        span_details = span_details or getattr(exception, EXCEPTION_SPAN_ATTR, None)
        operation_details = operation_details or getattr(exception, EXCEPTION_CONTEXT_ATTR, None)
        exception = exception.__cause__ or exception.__context__
    details = dict(span_details or {})
    details.update({key: value for key, value in (operation_details or {}).items() if value is not None})
    return details


def current_details() -> dict[str, Any]:
    """The current OTel span and baggage: for events captured without an exception that carries them."""
    span = trace.get_current_span()
    span_context = span.get_span_context()
    details = _identity(getattr(span, "attributes", None))
    if span_context.is_valid:
        details["trace_id"] = trace.format_trace_id(span_context.trace_id)
        details["span_id"] = trace.format_span_id(span_context.span_id)
    return details
