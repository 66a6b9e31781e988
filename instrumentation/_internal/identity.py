"""Who is acting: identity in OTel baggage, copied onto every span and event record.

Trust rule: a caller's ``user.id`` and ``phonoglyph.user.guest`` are never believed. The server-span
layer drops them from the incoming baggage (:func:`from_caller`) before anything reads it; ``user.id``
comes only from the service's own authentication (``identify_request``, ``identify()``).

Session rule: the browser's session id wins when the request carries one, as baggage ``session.id``
or as posthog-js's ``X-POSTHOG-SESSION-ID`` header (baggage first): a server-issued session id (the
principal's, or one given to ``identify()`` while handling that request) gives way to it, so backend
events join the browser's session. posthog-js's ``X-POSTHOG-DISTINCT-ID`` names the person of a
request with no authenticated principal (as ``user.id``, marked guest); it never replaces the user id
of an authenticated one.
"""

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

UNTRUSTED_BAGGAGE_KEYS = (semconv.USER_ID, semconv.USER_GUEST)
"""Identity entries a caller's baggage may not set: dropped from every incoming request's context."""
MAX_BROWSER_ID_CHARS = 200
"""A browser's session or distinct id longer than this is ignored (posthog-js's are uuids)."""

_BROWSER_SESSION = context.create_key("phonoglyph.browser_session")
_BROWSER_DISTINCT_ID = context.create_key("phonoglyph.browser_distinct_id")


def _browser_id(value: object) -> str | None:
    """A usable browser id: the first of repeated header values, trimmed; None when empty or too long."""
    if not isinstance(value, str) or not value:
        return None
    text = value.partition(",")[0].strip()
    return text if text and len(text) <= MAX_BROWSER_ID_CHARS else None


def from_caller(ctx: Context, session_header: str | None = None, distinct_id_header: str | None = None) -> Context:
    """A request's context as extracted from its headers, made safe to read: the caller's ``user.id``
    and guest flag dropped, the browser's session id (baggage ``session.id``, else ``session_header``)
    kept in the baggage and remembered for :func:`context_with_identity`, the browser's distinct id
    remembered for :func:`with_request_identity`."""
    entries = baggage.get_all(ctx)
    session = None
    if entries:
        for key in UNTRUSTED_BAGGAGE_KEYS:
            if key in entries:
                ctx = baggage.remove_baggage(key, ctx)
        baggage_session = entries.get(semconv.SESSION_ID)
        if baggage_session is not None:
            session = _browser_id(baggage_session)
            if session != baggage_session:
                ctx = baggage.remove_baggage(semconv.SESSION_ID, ctx)
    if session is None and session_header:
        session = _browser_id(session_header)
    if session is not None:
        ctx = context.set_value(_BROWSER_SESSION, session, baggage.set_baggage(semconv.SESSION_ID, session, ctx))
    if distinct_id_header:
        distinct_id = _browser_id(distinct_id_header)
        if distinct_id is not None:
            ctx = context.set_value(_BROWSER_DISTINCT_ID, distinct_id, ctx)
    return ctx


def with_request_identity(ctx: Context, identity: Identity | None) -> Context:
    """``ctx`` (from :func:`from_caller`) with ``identity`` (``identify_request``'s answer) merged by the
    session rule; with no authenticated user, the browser's distinct id (if any) names the person."""
    if identity is None or not identity.user_id:
        distinct_id = context.get_value(_BROWSER_DISTINCT_ID, ctx)
        if distinct_id is not None:
            identity = Identity(
                user_id=str(distinct_id), session_id=identity.session_id if identity else None, guest=True
            )
        elif identity is None:
            return ctx
    return context_with_identity(identity, ctx)


def context_with_identity(identity: Identity, parent: Context | None = None) -> Context:
    """``parent`` (default: current) with the identity's baggage entries, replacing any earlier identity;
    a browser session id of the request (session rule) replaces the identity's."""
    ctx = parent if parent is not None else context.get_current()
    browser_session = context.get_value(_BROWSER_SESSION, ctx)
    for key, value in (
        (semconv.USER_ID, identity.user_id),
        (semconv.SESSION_ID, browser_session or identity.session_id),
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
    gets ``user.id`` / ``session.id`` too. While handling a request that carries a browser session id,
    that session id is kept (session rule, module docstring).
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
