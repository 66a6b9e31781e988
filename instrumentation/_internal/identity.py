"""Who is acting: identity in OTel baggage, copied onto every span and event record."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

from opentelemetry import baggage, context, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from instrumentation import semconv


@dataclass(frozen=True)
class Identity:
    user_id: str | None = None
    session_id: str | None = None
    guest: bool = False


_TRUE = "true"
_FALSE = "false"


def context_with_identity(identity: Identity, parent: Context | None = None) -> Context:
    """``parent`` (default: current) with the identity's baggage entries, replacing any earlier identity."""
    ctx = parent if parent is not None else context.get_current()
    for key, value in (
        (semconv.USER_ID, identity.user_id),
        (semconv.SESSION_ID, identity.session_id),
    ):
        ctx = baggage.set_baggage(key, value, ctx) if value else baggage.remove_baggage(key, ctx)
    return baggage.set_baggage(semconv.USER_GUEST, _TRUE if identity.guest else _FALSE, ctx)


def identity_attributes(ctx: Context | None = None) -> dict[str, Any]:
    """The identity entries of the baggage in ``ctx`` as span/event attributes (empty when none)."""
    entries = baggage.get_all(ctx)
    if not entries:
        return {}
    attributes: dict[str, Any] = {}
    for key in (semconv.USER_ID, semconv.SESSION_ID):
        value = entries.get(key)
        if value:
            attributes[key] = str(value)
    guest = entries.get(semconv.USER_GUEST)
    if guest is not None:
        attributes[semconv.USER_GUEST] = guest == _TRUE
    return attributes


class identify:
    """Put the caller's identity in the context (baggage), so spans and events below carry it.

    A plain call attaches it for the rest of the current context (a request's task, a job); used
    as ``with identify(...)`` it is detached at the end of the block. Either way the current span
    gets ``user.id`` / ``session.id`` too.
    """

    __slots__ = ("identity", "_token")

    def __init__(self, user_id: str | None = None, session_id: str | None = None, guest: bool = False) -> None:
        from instrumentation._internal.guard import guarded

        self.identity = Identity(user_id=user_id, session_id=session_id, guest=guest)
        self._token: object | None = None
        with guarded():
            self._token = context.attach(context_with_identity(self.identity))
            span = trace.get_current_span()
            if span.is_recording():
                span.set_attributes(identity_attributes())

    def __enter__(self) -> Identity:
        return self.identity

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            context.detach(self._token)  # type: ignore[arg-type]
            self._token = None


class IdentitySpanProcessor(SpanProcessor):
    """Copies the identity baggage onto each span when it starts (one baggage read per span)."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attributes = identity_attributes(parent_context)
        if attributes:
            span.set_attributes(attributes)

    def on_end(self, span: ReadableSpan) -> None:
        pass
