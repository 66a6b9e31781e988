"""instrument_fastapi(): one SERVER span per request from a lean pure-ASGI layer, outermost.

The layer wraps the application's own ``__call__`` (an instance-level subclass), so the server span
encloses everything the app does. An exception that leaves the app is handed to the
``REQUEST_ERROR_HANDLERS`` while the server span is still current (Sentry's reporter is one: its
events carry this request's trace id), and each request runs inside the ``REQUEST_SCOPES`` (Sentry's
isolation scope: one request's breadcrumbs never reach another's error). FastAPI's native tracing is
switched off for the app, so a request never gets a second server span.

Only the outermost instrumented app of a request opens its span: the layer marks the ASGI scope, and an
instrumented app mounted inside another (the distro instruments every FastAPI app) passes through. The
route template (``http.route``, the span name) is assembled while Starlette routes the request: the
``handle`` of each matched route records its template in the request's record (a mount its prefix, the
final route its path), so include prefixes, mounts at any depth and non-API routes (``/openapi.json``,
``StaticFiles``, a mounted WSGI app) are named by their full template, with no matching of our own.
WebSocket connections get one SERVER span each, named ``WEBSOCKET route``, with their close code.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager, ExitStack
from contextvars import Token
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from instrumentation import semconv
from instrumentation._internal import pipeline
from instrumentation._internal.config import DEFAULT_EXCLUDED_URLS
from instrumentation._internal.guard import guarded, report
from instrumentation._internal.identity import Identity, from_caller, with_request_identity
from instrumentation._internal.lean_span import LeanSpan
from instrumentation._internal.sentry.propagation import SENTRY_TRACE_HEADER, parse_sentry_trace

Scope = dict[str, Any]
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
"""Other methods are recorded as ``_OTHER`` (OTel HTTP semantic conventions): metric series stay bounded."""
IdentifyRequest = Callable[[Mapping[str, Any]], Identity | None]

_POSTHOG_SESSION_HEADER = "x-posthog-session-id"
_POSTHOG_DISTINCT_ID_HEADER = "x-posthog-distinct-id"
_CALLER_HEADERS = frozenset(
    {b"traceparent", b"tracestate", b"baggage", b"sentry-trace", b"x-posthog-session-id", b"x-posthog-distinct-id"}
)
"""The headers a request's context is built from: trace propagation, and posthog-js's tracing headers."""
_SERVER_ERROR = Status(StatusCode.ERROR)

REQUEST_ERROR_HANDLERS: list[Callable[[Exception, Scope], None]] = []
"""Called with each exception that leaves an instrumented app, while its server span is still the
current span (an error reporter registered here links its events to the request's trace); for an
excluded URL, with no span. The scope they get is a copy: ``root_path`` as the server sent it (not a
mount's), ``route`` a ``RouteTemplate`` with the full template (None when no route matched)."""


REQUEST_SCOPES: list[Callable[[], AbstractContextManager[Any]]] = []
"""Context managers entered around each request (span or not), outermost first."""

REQUEST_KEY = "phonoglyph.request"
"""The ASGI scope key of a request the outermost instrumented app handles (its ``RequestRecord``)."""
WEBSOCKET_CLOSE_CODE = "websocket.close.code"
"""Span attribute: the close code of a WebSocket connection (sent by the app, else by the client)."""
NORMAL_CLOSE_CODES = frozenset({1000, 1001, 1005})
"""WebSocket close codes that end a connection normally (RFC 6455: normal, going away, no status)."""


class RequestRecord:
    """What routing found for one request: the mount prefixes it went through and the final route."""

    __slots__ = ("leaf", "last_mount", "mounts")

    def __init__(self) -> None:
        self.mounts: list[str] | None = None
        self.last_mount: Any = None
        self.leaf: str | None = None

    def route(self, scope: Scope) -> str | None:
        """The full route template, or None (no route matched)."""
        mounts, leaf = self.mounts, self.leaf
        if mounts is None:
            if leaf is not None:
                return leaf
            return getattr(scope.get("route"), "path", None)  # a route class with a handle of its own
        if leaf is not None:
            return "".join(mounts) + leaf
        if self.last_mount is not None and not getattr(self.last_mount, "routes", None):
            return "".join(mounts) + "/{path:path}"  # a mounted app that is not a router: static files, WSGI
        return None


class RouteTemplate:
    """Stands for ``scope["route"]`` in the scope given to ``REQUEST_ERROR_HANDLERS``: the full template."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


def is_normal_close(exc: BaseException | None) -> bool:
    """A ``WebSocketDisconnect`` with a normal close code: the client left, not an error."""
    return type(exc).__name__ == "WebSocketDisconnect" and getattr(exc, "code", None) in NORMAL_CLOSE_CODES


def _compile_excluded(excluded_urls: str | None) -> Callable[[str], Any] | None:
    """Comma-separated paths or regexes, matched against the whole request path."""
    patterns = [p.strip() for p in (excluded_urls or "").split(",") if p.strip()]
    if not patterns:
        return None
    if all(re.escape(p) == p for p in patterns):  # plain paths (the default): a set lookup per request
        return frozenset(patterns).__contains__
    return re.compile("|".join(f"(?:{p})" for p in patterns)).fullmatch


def _parent_context(headers: list[tuple[bytes, bytes]]) -> Context:
    """The caller's context, built from the request headers alone: never from the current context.

    Whatever is attached when a request starts belongs to someone else (uvicorn can resume a
    keep-alive connection's next request inside the previous one's context: CPython #140947,
    uvicorn #2167), so a request without propagation headers starts a new trace with no baggage.
    The caller's baggage never sets ``user.id`` or the guest flag (identity trust rule, ``from_caller``);
    its session id, or posthog-js's ``X-POSTHOG-SESSION-ID``, is the browser's session.
    """
    carrier: dict[str, str] | None = None
    for key, value in headers:
        if key in _CALLER_HEADERS:
            if carrier is None:
                carrier = {}
            name = key.decode("latin-1")
            text = value.decode("latin-1")
            carrier[name] = f"{carrier[name]},{text}" if name in carrier else text
    if carrier is None:
        return Context()
    session_header = carrier.pop(_POSTHOG_SESSION_HEADER, None)
    distinct_id_header = carrier.pop(_POSTHOG_DISTINCT_ID_HEADER, None)
    ctx = propagate.extract(carrier, context=Context()) if carrier else Context()
    if "traceparent" not in carrier and SENTRY_TRACE_HEADER in carrier:
        # honoured even when Sentry is off (the global propagator then has no sentry-trace part)
        span_context = parse_sentry_trace(carrier[SENTRY_TRACE_HEADER])
        if span_context is not None:
            ctx = trace.set_span_in_context(trace.NonRecordingSpan(span_context), ctx)
    return from_caller(ctx, session_header, distinct_id_header)


def _server_attributes(scope: Scope) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        semconv.URL_PATH: scope["path"],
        semconv.URL_SCHEME: scope.get("scheme", "http"),
    }
    method = scope.get("method")  # none on a WebSocket scope
    if method is not None:
        attributes[semconv.HTTP_REQUEST_METHOD] = method
    query = scope.get("query_string")
    if query:
        attributes[semconv.URL_QUERY] = query.decode("latin-1")
    for key, value in scope["headers"]:
        if key == b"host":
            host = value.decode("latin-1")
            name, separator, port = host.rpartition(":")
            if separator and port.isdigit():
                attributes[semconv.SERVER_ADDRESS] = name
                attributes[semconv.SERVER_PORT] = int(port)
            else:
                attributes[semconv.SERVER_ADDRESS] = host
            break
    return attributes


class ServerSpanMiddleware:
    """Pure ASGI: extract the caller's trace, start the SERVER span, record the response status."""

    def __init__(
        self,
        app: Callable[..., Any],
        *,
        excluded_urls: str | None,
        identify_request: IdentifyRequest | None,
    ) -> None:
        self.app = app
        self.set_options(excluded_urls=excluded_urls, identify_request=identify_request)

    def set_options(self, *, excluded_urls: str | None, identify_request: IdentifyRequest | None) -> None:
        self._is_excluded = _compile_excluded(excluded_urls)
        self._identify_request = identify_request

    async def __call__(self, scope: Scope, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        kind = scope["type"]
        if (kind != "http" and kind != "websocket") or REQUEST_KEY in scope:
            await self.app(scope, receive, send)  # lifespan, or an app mounted in an instrumented one
            return
        record = RequestRecord()
        app_root_path = scope.get("app_root_path")  # set by a Starlette mount above this app
        if app_root_path is not None:
            mount_path = scope.get("root_path", "")[len(app_root_path) :]
            if mount_path:  # mounted in an app that is not instrumented: its mount's path leads the route
                record.mounts = [mount_path]
        scope[REQUEST_KEY] = record
        handle = self._handle if kind == "http" else self._handle_websocket
        if not REQUEST_SCOPES:
            await handle(scope, receive, send, record)
            return
        if len(REQUEST_SCOPES) == 1:
            with REQUEST_SCOPES[0]():
                await handle(scope, receive, send, record)
            return
        with ExitStack() as request_scopes:
            for request_scope in REQUEST_SCOPES:
                request_scopes.enter_context(request_scope())
            await handle(scope, receive, send, record)

    async def _handle(
        self, scope: Scope, receive: Callable[..., Any], send: Callable[..., Any], record: RequestRecord
    ) -> None:
        if self._is_excluded is not None and self._is_excluded(scope["path"]):
            await self._call_without_span(scope, receive, send, record)
            return
        root_path = scope.get("root_path", "")
        try:
            span, token = self._start(scope, scope["method"], _server_attributes(scope))
        except Exception as exc:
            report(exc)
            await self.app(scope, receive, send)
            return

        status_code = 0
        error_type: str | None = None
        started = time.perf_counter()

        async def send_with_status(message: dict[str, Any]) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        except BaseException as exc:
            error_type = type(exc).__qualname__
            _record_error(span, exc, scope, record, root_path)
            raise
        finally:
            try:
                route = record.route(scope)
                self._end(scope["method"], span, route, status_code)
                _record_request(scope, route, status_code, error_type, time.perf_counter() - started)
            except Exception as exc:
                report(exc)
            finally:
                context.detach(token)

    async def _handle_websocket(
        self, scope: Scope, receive: Callable[..., Any], send: Callable[..., Any], record: RequestRecord
    ) -> None:
        """One SERVER span per connection: 101 once accepted, the close code; a normal close is no error."""
        if self._is_excluded is not None and self._is_excluded(scope["path"]):
            await self._call_without_span(scope, receive, send, record)
            return
        root_path = scope.get("root_path", "")
        try:
            span, token = self._start(scope, "WEBSOCKET", _server_attributes(scope))
        except Exception as exc:
            report(exc)
            await self.app(scope, receive, send)
            return

        status_code = 0
        close_code: int | None = None
        failed = False

        async def receive_with_close() -> Any:
            nonlocal close_code
            message = await receive()
            if message["type"] == "websocket.disconnect" and close_code is None:
                close_code = message.get("code", 1005)
            return message

        async def send_with_close(message: dict[str, Any]) -> None:
            nonlocal status_code, close_code
            kind = message["type"]
            if kind == "websocket.accept":
                status_code = 101
            elif kind == "websocket.close":
                if close_code is None:
                    close_code = message.get("code", 1000)
                if not status_code:
                    status_code = 403  # closed before the handshake: the server answers 403
            elif kind == "websocket.http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive_with_close, send_with_close)
        except BaseException as exc:
            if is_normal_close(exc):
                if close_code is None:
                    close_code = getattr(exc, "code", None)
                raise
            failed = True
            _record_error(span, exc, scope, record, root_path)
            raise
        finally:
            try:
                if span.is_recording() and close_code is not None:
                    span.set_attribute(WEBSOCKET_CLOSE_CODE, close_code)
                    if close_code == 1011 and not failed:  # the app closed on an internal error
                        span.set_status(_SERVER_ERROR)
                self._end("WEBSOCKET", span, record.route(scope), status_code)
            except Exception as exc:
                report(exc)
            finally:
                context.detach(token)

    async def _call_without_span(
        self, scope: Scope, receive: Callable[..., Any], send: Callable[..., Any], record: RequestRecord
    ) -> None:
        root_path = scope.get("root_path", "")
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            if not is_normal_close(exc):
                with guarded():  # no span to record it on; error reporters still hear of it
                    _report_error(exc, scope, record, root_path)
            raise

    def _start(self, scope: Scope, method: str, attributes: dict[str, Any]) -> tuple[trace.Span, Token[Context]]:
        headers = scope["headers"]
        parent = _parent_context(headers)
        identity = self._identify_request(scope) if self._identify_request is not None else None
        if identity is not None or parent:  # an empty context stays empty without an identity
            parent = with_request_identity(parent, identity)  # session rule; the distinct id of anonymous callers
        current = pipeline.CURRENT[0]
        if current.start_server_span is not None:
            span = current.start_server_span(method, parent, SpanKind.SERVER, attributes)
        else:
            span = current.tracer.start_span(method, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        ctx = trace.set_span_in_context(span, parent)
        return span, context.attach(ctx)

    def _end(self, method: str, span: trace.Span, route: str | None, status_code: int) -> None:
        name = f"{method} {route}" if route else None
        status = _SERVER_ERROR if status_code >= 500 else None
        if type(span) is LeanSpan:
            span.end_request(name, route or None, status_code, status)  # the same, in one call
            return
        if span.is_recording():
            if name is not None:
                span.set_attribute(semconv.HTTP_ROUTE, route)
                span.update_name(name)
            if status_code:
                span.set_attribute(semconv.HTTP_RESPONSE_STATUS_CODE, status_code)
            if status is not None:
                span.set_status(status)
        span.end()


def _record_error(span: trace.Span, exc: BaseException, scope: Scope, record: RequestRecord, root_path: str) -> None:
    """An exception leaving the app: on the span (error status, ``error.type``), then to the error handlers
    while the span is still current."""
    with guarded():
        error_type = type(exc).__qualname__
        if span.is_recording():
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, error_type))
            span.set_attribute(semconv.ERROR_TYPE, error_type)
        if isinstance(exc, Exception):
            _report_error(exc, scope, record, root_path)


def _report_error(exc: Exception, scope: Scope, record: RequestRecord, root_path: str) -> None:
    """Hand ``exc`` to the ``REQUEST_ERROR_HANDLERS`` with the request as the server sent it (its own
    ``root_path``, not a mount's) and ``route`` standing for the full template (or None)."""
    if not REQUEST_ERROR_HANDLERS:
        return
    route = record.route(scope)
    request_scope = {**scope, "root_path": root_path, "route": RouteTemplate(route) if route else None}
    for handler in REQUEST_ERROR_HANDLERS:
        handler(exc, request_scope)


def _record_request(
    scope: Scope, route_path: str | None, status_code: int, error_type: str | None, duration_s: float
) -> None:
    """One ``http.server.request.duration`` point, sampled or not: the collector's ``http_error_rate`` rule
    reads the 5xx share from it. An exception before the response counts as the 500 the server answers."""
    method = scope["method"]
    status = status_code or 500
    if error_type is None and status >= 500:
        error_type = str(status)
    pipeline.CURRENT[0].request_durations.record(
        method if method in _KNOWN_METHODS else "_OTHER", status, route_path or None, error_type, duration_s
    )


def _leaf_path(route: Any, scope: Scope) -> str | None:
    """A matched route's template. FastAPI >= 0.16x handles a route of an included router as its original
    object (its path lacks the include prefixes) and puts its effective context, full path included,
    in ``scope["fastapi"]``."""
    fastapi_scope = scope.get("fastapi")
    if type(fastapi_scope) is dict:
        effective = fastapi_scope.get("effective_route_context")
        if effective is not None and getattr(effective, "original_route", None) is route:
            path = getattr(effective, "path", None)
            if isinstance(path, str) and path:
                return path
    return getattr(route, "path", None)


def _recording_leaf_handle(original: Callable[..., Any]) -> Callable[..., Any]:
    def handle(self: Any, scope: Scope, receive: Any, send: Any) -> Awaitable[None]:
        record = scope.get(REQUEST_KEY)
        if record is not None:
            record.leaf = _leaf_path(self, scope)
        return original(self, scope, receive, send)  # the router awaits it: no coroutine of our own

    return handle


def _recording_mount_handle(original: Callable[..., Any]) -> Callable[..., Any]:
    def handle(self: Any, scope: Scope, receive: Any, send: Any) -> Awaitable[None]:
        record = scope.get(REQUEST_KEY)
        if record is not None:
            if record.mounts is None:
                record.mounts = [self.path]
            else:
                record.mounts.append(self.path)
            record.last_mount = self
            record.leaf = None
        return original(self, scope, receive, send)

    return handle


_ROUTING_RECORDED: list[bool] = []


def _record_routing() -> None:
    """Make every matched route record its template in the request's ``RequestRecord`` (once per process).

    Only classes that define ``handle`` themselves are wrapped (a subclass's own ``handle`` that calls
    its base records the same template twice: harmless).
    """
    if _ROUTING_RECORDED:
        return
    _ROUTING_RECORDED.append(True)
    from starlette import routing

    leaf_classes: list[type] = [routing.Route, routing.WebSocketRoute]
    try:
        from fastapi import routing as fastapi_routing

        leaf_classes += [fastapi_routing.APIRoute, fastapi_routing.APIWebSocketRoute]
    except ImportError:  # pragma: no cover - a Starlette app instrumented without FastAPI installed
        pass
    for cls in leaf_classes:
        original = cls.__dict__.get("handle")
        if original is not None:
            cls.handle = _recording_leaf_handle(original)  # type: ignore[attr-defined]
    original_mount = routing.Mount.__dict__["handle"]
    routing.Mount.handle = _recording_mount_handle(original_mount)  # type: ignore[method-assign]
    _record_fastapi_route_selection()


def _recording_frontend_handle(original: Callable[..., Any]) -> Callable[..., Any]:
    """``app.frontend(path, ...)`` of FastAPI versions that handle it through its route (before
    ``_route_selected``): the template FastAPI's telemetry gives it, ``path/{path}``."""

    def handle(self: Any, scope: Scope, receive: Any, send: Any) -> Awaitable[None]:
        record = scope.get(REQUEST_KEY)
        if record is not None:
            record.leaf = self.path.rstrip("/") + "/{path}"
        return original(self, scope, receive, send)

    return handle


def _record_fastapi_route_selection() -> None:
    """FastAPI >= 0.16x tells its own telemetry which template it selected (``_route_selected``), also for
    routes whose ``handle`` is not a Starlette route's (``app.frontend(...)``); a route's ``handle``
    recorded afterwards takes precedence."""
    try:
        from fastapi import routing as fastapi_routing
    except ImportError:  # pragma: no cover
        return
    frontend_route = getattr(fastapi_routing, "_FrontendRoute", None)
    original_frontend = getattr(frontend_route, "__dict__", {}).get("handle")
    if original_frontend is not None:
        frontend_route.handle = _recording_frontend_handle(original_frontend)  # type: ignore[union-attr]
    selected = getattr(fastapi_routing, "_route_selected", None)
    if selected is None:
        return

    def _route_selected(*, scope: Any, path: str | None, mount: bool = False) -> None:
        selected(scope=scope, path=path, mount=mount)
        if not mount and path is not None:
            record = scope.get(REQUEST_KEY)
            if record is not None:
                record.leaf = path

    fastapi_routing._route_selected = _route_selected


_INSTRUMENTED_CLASSES: dict[type, type] = {}


def _instrumented_class(cls: type) -> type:
    """A subclass whose ``__call__`` runs the instance's server-span layer around the class's own."""
    instrumented = _INSTRUMENTED_CLASSES.get(cls)
    if instrumented is None:

        async def __call__(self: Any, scope: Scope, receive: Any, send: Any) -> None:
            await self.__phonoglyph_server_spans__(scope, receive, send)

        instrumented = type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__})
        _INSTRUMENTED_CLASSES[cls] = instrumented
    return instrumented


def _disable_native_tracing(app: Any) -> None:
    """FastAPI >= 0.142 traces natively once a TracerProvider is set; ours replaces it."""
    config = getattr(app, "_telemetry", None)
    if isinstance(config, dict):
        config.update(tracing=False, metrics=False, logs=False)


def instrument_fastapi(
    app: Any,
    *,
    excluded_urls: str | None = DEFAULT_EXCLUDED_URLS,
    identify_request: IdentifyRequest | None = None,
) -> Any:
    """Give every request of ``app`` one SERVER span named ``METHOD route``; returns ``app``.

    ``excluded_urls``: comma-separated paths (or regexes) that get no span. ``identify_request``
    receives the ASGI scope when the request starts and returns the caller's ``Identity`` (or None):
    the only source of ``user.id`` (a caller's baggage never sets it; the browser's session id wins
    over the identity's: docs/architecture.md "Identity").
    Instrumenting an instrumented app (e.g. one ``opentelemetry-instrument`` already instrumented
    when it was created) only replaces these options: still one server span per request.
    """
    with guarded():
        existing = getattr(app, "__phonoglyph_server_spans__", None)
        if existing is not None:
            existing.set_options(excluded_urls=excluded_urls, identify_request=identify_request)
        else:
            _instrument(app, excluded_urls, identify_request)
    return app


def _instrument(app: Any, excluded_urls: str | None, identify_request: IdentifyRequest | None) -> None:
    _record_routing()
    app_cls = type(app)
    instrumented_cls = _instrumented_class(app_cls)

    def app_call(scope: Scope, receive: Any, send: Any) -> Awaitable[None]:
        return app_cls.__call__(app, scope, receive, send)  # the class's own, under the subclass's

    app.__phonoglyph_server_spans__ = ServerSpanMiddleware(
        app_call, excluded_urls=excluded_urls, identify_request=identify_request
    )
    _disable_native_tracing(app)
    app.__class__ = instrumented_cls


def instrument_every_fastapi_app(*, excluded_urls: str | None) -> None:
    """Instrument each FastAPI app when it is created (for opentelemetry-instrument; idempotent).

    The hook is ``FastAPI.setup``, which ``FastAPI.__init__`` calls last: ``__init__`` itself stays
    FastAPI's own, so the warnings it emits (``stacklevel=2``) point at the line that created the app.
    """
    from fastapi import FastAPI

    original_setup = FastAPI.setup
    if getattr(original_setup, "__phonoglyph_instruments__", False):
        return

    def setup(self: Any) -> None:
        original_setup(self)
        instrument_fastapi(self, excluded_urls=excluded_urls)

    setup.__phonoglyph_instruments__ = True  # type: ignore[attr-defined]
    FastAPI.setup = setup  # type: ignore[method-assign]
