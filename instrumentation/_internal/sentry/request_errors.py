"""Report an exception that leaves an instrumented app, with the request data Sentry shows.

Sentry's web-framework integrations (an ASGI middleware, a scope and event processors on every
request) are off; ``fastapi.REQUEST_ERROR_HANDLERS`` calls :func:`report_request_error` instead,
while the request's server span is current, and the request data comes from the ASGI scope
(scrubbed by ``before_send`` like the rest of the event).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from opentelemetry import trace

REQUEST_MECHANISM: Final = "phonoglyph.asgi"
"""The exception mechanism of a reported request error (unhandled)."""
REQUEST_BODY_SCOPE_KEY: Final = "phonoglyph.request_body"
"""Where the ASGI scope keeps a body the app read (Starlette's ``Request.body``), for an error event."""
REQUEST_SCOPE_HINT: Final = "phonoglyph.asgi_scope"
"""The hint key of a reported request's ASGI scope: ``before_send`` scrubs the request's own secrets
(cookie values, credentials in headers, sensitive query and body fields) wherever the event holds
them, e.g. in frame variables that do not name them (a dependency cache, a parsed token)."""
MIN_SECRET_CHARS: Final = 6
"""Shorter values of a request are not searched for elsewhere in its event (too common to mean it)."""

_JSON_TYPES: Final = ("application/json", "+json")
_FORM_TYPE: Final = "application/x-www-form-urlencoded"


def report_request_error(exc: Exception, scope: Mapping[str, Any]) -> None:
    """A ``REQUEST_ERROR_HANDLERS`` entry: report an exception that left an instrumented app.

    Called while the request's server span is current (its trace id goes on the event). What
    Sentry's Starlette integration would add comes from the ASGI scope: ``transaction`` = the
    route, ``request`` (method, URL without query, query string, headers, body the app read;
    cookies only with ``send_default_pii``), mechanism unhandled. An ``HTTPException`` below 500
    is a client error, never reported (as Sentry's default; ``before_send`` drops one logged by the
    server too); one of 500 or more that leaves the app is. Starlette answers an ``HTTPException``
    a route raises itself, whatever its status: it never gets here (the server span has the 5xx).
    """
    import sentry_sdk
    from sentry_sdk.utils import event_from_exception

    if is_client_error(exc):
        return
    client = sentry_sdk.get_client()
    if not client.is_active():
        return
    event, hint = event_from_exception(
        exc, client_options=client.options, mechanism={"type": REQUEST_MECHANISM, "handled": False}
    )
    event["request"] = request_data(scope, client)
    event["transaction"] = _route(scope)
    event["transaction_info"] = {"source": "route" if scope.get("route") is not None else "url"}
    hint[REQUEST_SCOPE_HINT] = scope
    with sentry_sdk.isolation_scope() as isolation:
        if not trace.get_current_span().get_span_context().is_valid:
            isolation.set_new_propagation_context()  # an excluded URL: a trace of its own
        sentry_sdk.capture_event(event, hint=hint)


def is_client_error(exc: BaseException | None) -> bool:
    """An ``HTTPException`` (Starlette's, FastAPI's) with a status below 500."""
    status_code = getattr(exc, "status_code", None)
    if not isinstance(status_code, int) or status_code >= 500:
        return False
    try:
        from starlette.exceptions import HTTPException
    except ImportError:
        return False
    return isinstance(exc, HTTPException)


def _route(scope: Mapping[str, Any]) -> str:
    return getattr(scope.get("route"), "path", None) or scope.get("path") or "/"


def request_data(scope: Mapping[str, Any], client: Any) -> dict[str, Any]:
    headers: dict[str, str] = {}
    for key, value in scope.get("headers") or ():
        name, text = key.decode("latin-1"), value.decode("latin-1")
        headers[name] = f"{headers[name]}, {text}" if name in headers else text
    host = headers.get("host") or _server_host(scope)
    path = f"{scope.get('root_path', '')}{scope.get('path', '')}"
    request: dict[str, Any] = {
        "method": scope.get("method"),
        "url": f"{scope.get('scheme', 'http')}://{host}{path}",
        "query_string": (scope.get("query_string") or b"").decode("latin-1"),
        "headers": headers,
    }
    if client.options.get("send_default_pii") and "cookie" in headers:
        from http.cookies import SimpleCookie

        cookies = SimpleCookie()
        cookies.load(headers["cookie"])
        request["cookies"] = {name: morsel.value for name, morsel in cookies.items()}
    data = _request_body(scope, headers, client)
    if data is not None:
        request["data"] = data
    return request


def _server_host(scope: Mapping[str, Any]) -> str:
    server = scope.get("server")
    return f"{server[0]}:{server[1]}" if server else "localhost"


def _request_body(scope: Mapping[str, Any], headers: Mapping[str, str], client: Any) -> Any:
    """The body as Sentry's Starlette integration showed it: JSON or form fields, else an annotation."""
    from sentry_sdk.integrations._wsgi_common import request_body_within_bounds
    from sentry_sdk.utils import AnnotatedValue

    length = headers.get("content-length", "")
    if not length.isdigit() or not int(length):
        return None
    if not request_body_within_bounds(client, int(length)):
        return AnnotatedValue.removed_because_over_size_limit()
    body = scope.get(REQUEST_BODY_SCOPE_KEY)
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if isinstance(body, bytes):
        try:
            if content_type.endswith(_JSON_TYPES):
                return json.loads(body)
            if content_type == _FORM_TYPE:
                from urllib.parse import parse_qsl

                return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        except ValueError:
            pass
    return AnnotatedValue.removed_because_raw_data()


def keep_request_bodies() -> None:
    """Wrap Starlette's ``Request.body`` (once) so a body the app read stays in the ASGI scope for an
    error event: one dict store, only on requests whose body is read; no body is read or parsed
    up front."""
    try:
        from starlette.requests import Request
    except ImportError:  # no Starlette: no request bodies to keep
        return
    original = Request.body
    if getattr(original, "_phonoglyph_keeps", False):
        return

    @functools.wraps(original)
    async def body(self: Request) -> bytes:
        data = await original(self)
        self.scope[REQUEST_BODY_SCOPE_KEY] = data
        return data

    body._phonoglyph_keeps = True  # type: ignore[attr-defined]
    Request.body = body  # type: ignore[method-assign,assignment]


def request_secrets(scope: Mapping[str, Any], is_sensitive: Callable[[str], bool]) -> set[str]:
    """The values of a request that are secret by their name: every cookie value, headers and
    query or body fields whose name ``is_sensitive`` (and a credential after its scheme), as sent
    and URL-decoded; values shorter than :data:`MIN_SECRET_CHARS` are left out."""
    from urllib.parse import parse_qsl, unquote_plus

    found: set[str] = set()

    def add(value: str) -> None:
        for candidate in (value, unquote_plus(value), value.partition(" ")[2]):
            candidate = candidate.strip().strip('"')
            if len(candidate) >= MIN_SECRET_CHARS:
                found.add(candidate)

    content_type = ""
    for key, value in scope.get("headers") or ():
        name, text = key.decode("latin-1").lower(), value.decode("latin-1")
        if name == "content-type":
            content_type = text.split(";", 1)[0].strip().lower()
        if name == "cookie":
            add(text)
            for part in text.split(";"):
                add(part.partition("=")[2])
        elif is_sensitive(name):
            add(text)
    query = (scope.get("query_string") or b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if is_sensitive(name):
            add(value)
    body = scope.get(REQUEST_BODY_SCOPE_KEY)
    if isinstance(body, bytes) and body:
        fields: Any = None
        try:
            if content_type.endswith(_JSON_TYPES):
                fields = json.loads(body)
            elif content_type == _FORM_TYPE:
                fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        except (ValueError, RecursionError):
            fields = None
        if isinstance(fields, dict):
            for name, value in fields.items():
                if isinstance(value, str) and is_sensitive(str(name)):
                    add(value)
    return found
