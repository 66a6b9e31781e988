"""Sentry in process: errors linked to the OTel trace, scrubbed, with audio context; spans over OTLP.

``setup_sentry`` runs after the global TracerProvider is set (sentry-sdk 2.75's ``OTLPIntegration``
links events to the current OTel span through ``register_external_propagation_context``). Three
things of sentry-sdk are replaced by ours:

- its span exporter: spans go to Sentry's OTLP endpoint through our export queue and our
  :class:`OtlpHttpSpanExporter` (scrubbed chunk by chunk while encoding, never unscrubbed),
  without the collector's ``OTEL_EXPORTER_OTLP_HEADERS`` / TLS settings; with
  ``PHONOGLYPH_SENTRY_SPANS=off`` there is no span path to Sentry at all (a Collector forwards them);
- its propagator (``sentry-trace`` only): W3C ``traceparent`` + ``baggage`` stay the global
  propagator, and an incoming ``sentry-trace`` is honoured too;
- its web-framework integrations (Starlette, FastAPI, ...: an ASGI middleware, a scope and event
  processors on every request, about 190 µs a request): off. An error that leaves an instrumented
  app is reported from ``fastapi.REQUEST_ERROR_HANDLERS`` instead, while the server span is current,
  with the request data those integrations attached (``event["request"]``, scrubbed in before_send).
  What that costs: no per-request Sentry scope, so an event's breadcrumbs are the process's latest
  (scrubbed) log lines, not only its request's; an app that is not instrumented is reported only
  through the server's error log line (the logging integration).

The OTel sampler is the only sampling decision (no ``traces_sample_rate``: Sentry makes no
transactions of its own). ``before_send`` scrubs the whole event and adds what the exception
carries from the operation it left (``exc.__phonoglyph_context__``): tag ``operation``, context
``audio_processing``, the user id and the OTel trace id. The pipeline's own log lines
(``opentelemetry.*``, ``instrumentation.*``) never become Sentry events.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import requests
from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.trace import Span, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from instrumentation import semconv
from instrumentation._internal import fastapi as fastapi_layer
from instrumentation._internal.batching import QueueingSpanProcessor
from instrumentation._internal.config import QueueConfig
from instrumentation._internal.exporters import OtlpHttpSpanExporter
from instrumentation._internal.operations import EXCEPTION_CONTEXT_ATTR
from instrumentation._internal.scrubbing import SCRUBBED_ATTRIBUTE, Scrubber, scrub_span
from instrumentation._internal.stats import STATS

_logger = logging.getLogger("instrumentation")

EXCEPTION_SPAN_ATTR = "__phonoglyph_span__"
"""Set on an exception when the first OTel span records it: trace/span ids and identity.

An error captured after its span ended, outside it (the server logging what left the app, the app
logging an exception it caught higher up) still gets that span's trace id this way."""

OPERATION_TAG = "operation"
AUDIO_CONTEXT = "audio_processing"
SENTRY_TRACE_HEADER = "sentry-trace"
SENTRY_OTLP_HEADERS = frozenset({"content-type", "content-encoding", "user-agent", "x-sentry-auth"})
MAX_EXCEPTION_CHAIN = 10

PIPELINE_LOGGERS = ("instrumentation", "instrumentation.*", "opentelemetry.*")
"""Loggers (fnmatch patterns) Sentry's logging integration ignores: the telemetry pipeline's own
lines (an unreachable collector, a failed export) are counters and logs, never Sentry events, and
our own error lines must not come back through before_send."""

SPANS_ENV = "PHONOGLYPH_SENTRY_SPANS"
"""``on`` (default): spans go to Sentry's OTLP endpoint from this process. ``off``: Sentry gets
errors only (an OpenTelemetry Collector forwards the spans; otherwise Sentry would get each twice)."""

WEB_FRAMEWORK_INTEGRATIONS = frozenset(
    {
        "aiohttp", "bottle", "chalice", "django", "falcon", "fastapi", "flask", "litestar",
        "pyramid", "quart", "sanic", "starlette", "starlite", "tornado",
    }
)  # fmt: skip
"""sentry-sdk integrations (by identifier) that hook every request: never enabled by setup_sentry."""

REQUEST_MECHANISM = "phonoglyph.asgi"
REQUEST_BODY_SCOPE_KEY = "phonoglyph.request_body"
"""Where the ASGI scope keeps a body the app read (Starlette's ``Request.body``), for an error event."""

_JSON_TYPES = ("application/json", "+json")
_FORM_TYPE = "application/x-www-form-urlencoded"

_OTLP_SPAN_QUEUE = QueueConfig()
_active_span_processor: list[QueueingSpanProcessor] = []


class SentryTraceExtractor(TextMapPropagator):
    """Honours an incoming ``sentry-trace`` header and writes one on outgoing calls.

    Placed before W3C tracecontext in the composite, so ``traceparent`` wins when both are sent.
    It never writes ``baggage`` (the W3C baggage propagator owns that header).
    """

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = default_getter
    ) -> Context:
        from sentry_sdk.integrations.opentelemetry.propagator import SentryPropagator

        return SentryPropagator().extract(carrier, context, getter)

    def inject(
        self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = default_setter
    ) -> None:
        span_context = trace.get_current_span(context).get_span_context()
        if not span_context.is_valid:
            return
        sampled = "1" if span_context.trace_flags.sampled else "0"
        setter.set(
            carrier,
            SENTRY_TRACE_HEADER,
            f"{trace.format_trace_id(span_context.trace_id)}-{trace.format_span_id(span_context.span_id)}-{sampled}",
        )

    @property
    def fields(self) -> set[str]:
        return {SENTRY_TRACE_HEADER}


def global_propagator() -> CompositePropagator:
    """W3C tracecontext + baggage, plus ``sentry-trace`` (extracted and injected)."""
    return CompositePropagator([SentryTraceExtractor(), TraceContextTextMapPropagator(), W3CBaggagePropagator()])


class SentryOtlpSession(requests.Session):
    """The HTTP session of the exporter to Sentry's OTLP endpoint: it sends only the headers that
    endpoint needs. ``OTEL_EXPORTER_OTLP_HEADERS`` (often the collector's bearer token) is meant for
    the collector; the OTLP exporter would add it to every request, to Sentry too."""

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        headers = kwargs.get("headers")
        if headers:
            kwargs["headers"] = {name: value for name, value in headers.items() if name.lower() in SENTRY_OTLP_HEADERS}
        return super().request(method, url, *args, **kwargs)


def _sentry_otlp_exporter(dsn: str, timeout_s: float, scrubber: Scrubber) -> OtlpHttpSpanExporter:
    from sentry_sdk.consts import VERSION, EndpointType
    from sentry_sdk.utils import Dsn

    auth = Dsn(dsn).to_auth(f"sentry.python/{VERSION}")
    session = SentryOtlpSession()
    exporter = OtlpHttpSpanExporter(
        endpoint=auth.get_api_url(EndpointType.OTLP_TRACES),
        headers={"X-Sentry-Auth": auth.to_header()},
        timeout=timeout_s,
        session=session,
        prepare=functools.partial(scrub_span, scrubber=scrubber),
    )
    # OTEL_EXPORTER_OTLP_CERTIFICATE / CLIENT_* are the collector's TLS settings, not Sentry's
    session.verify, session.cert = True, None
    return exporter


def spans_enabled_from_env() -> bool:
    """``PHONOGLYPH_SENTRY_SPANS``: ``off`` (or false/0/no) turns the span path to Sentry off."""
    raw = os.environ.get(SPANS_ENV, "").strip().lower()
    if raw in ("", "on", "true", "1", "yes"):
        return True
    if raw in ("off", "false", "0", "no"):
        return False
    _logger.warning("%s=%r is neither on nor off: spans go to Sentry (on)", SPANS_ENV, raw)
    return True


def _web_framework_integrations() -> list[Any]:
    """The installed auto-enabling integrations that would hook every request."""
    from sentry_sdk.integrations import iter_default_integrations

    return [cls for cls in iter_default_integrations(True) if cls.identifier in WEB_FRAMEWORK_INTEGRATIONS]


def setup_sentry(
    *,
    dsn: str | None,
    environment: str | None,
    release: str | None,
    tracer_provider: TracerProvider,
    scrubber: Scrubber,
    send_spans: bool | None = None,
) -> bool:
    """Start Sentry when ``dsn`` is set (returns True); without it, do nothing and say nothing.

    ``send_spans`` (default: ``PHONOGLYPH_SENTRY_SPANS``, on) adds the span path to Sentry's OTLP
    endpoint; off, Sentry gets errors only.
    """
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.logging import ignore_logger
    from sentry_sdk.integrations.otlp import OTLPIntegration

    if send_spans is None:
        send_spans = spans_enabled_from_env()
    for name in PIPELINE_LOGGERS:
        ignore_logger(name)
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        integrations=[OTLPIntegration(setup_otlp_traces_exporter=False, setup_propagator=False)],
        disabled_integrations=_web_framework_integrations(),
        before_send=functools.partial(_before_send, scrubber),
        before_breadcrumb=functools.partial(_before_breadcrumb, scrubber),
    )
    if send_spans:
        processor = QueueingSpanProcessor(
            _sentry_otlp_exporter(dsn, _OTLP_SPAN_QUEUE.export_timeout_s, scrubber), _OTLP_SPAN_QUEUE
        )
        tracer_provider.add_span_processor(processor)
        _active_span_processor[:] = [processor]
    propagate.set_global_textmap(global_propagator())
    _stamp_exceptions_with_their_span()
    _keep_request_bodies()
    if report_request_error not in fastapi_layer.REQUEST_ERROR_HANDLERS:
        fastapi_layer.REQUEST_ERROR_HANDLERS.append(report_request_error)
    if sentry_sdk.isolation_scope not in fastapi_layer.REQUEST_SCOPES:  # ~11 µs a request
        fastapi_layer.REQUEST_SCOPES.append(sentry_sdk.isolation_scope)
    return True


def shutdown_sentry(timeout_s: float) -> None:
    """Export the spans still queued for Sentry, then flush, close and unset the Sentry client."""
    import sentry_sdk

    while report_request_error in fastapi_layer.REQUEST_ERROR_HANDLERS:
        fastapi_layer.REQUEST_ERROR_HANDLERS.remove(report_request_error)
    while sentry_sdk.isolation_scope in fastapi_layer.REQUEST_SCOPES:
        fastapi_layer.REQUEST_SCOPES.remove(sentry_sdk.isolation_scope)
    for processor in _active_span_processor:
        processor.force_flush()
    _active_span_processor.clear()
    client = sentry_sdk.get_client()
    if client.is_active():
        client.close(timeout=timeout_s)
        sentry_sdk.get_global_scope().set_client(None)  # Sentry is off until setup_sentry runs again


# -- errors that leave a request -------------------------------------------------------------------


def report_request_error(exc: Exception, scope: Mapping[str, Any]) -> None:
    """A ``REQUEST_ERROR_HANDLERS`` entry: report an exception that left an instrumented app.

    Called while the request's server span is current (its trace id goes on the event). What
    Sentry's Starlette integration used to add comes from the ASGI scope: ``transaction`` = the
    route, ``request`` (method, URL without query, query string, headers, body the app read;
    cookies only with ``send_default_pii``), mechanism unhandled. An ``HTTPException`` below 500
    is a client error, never reported (as Sentry's default; ``before_send`` drops one logged by the
    server too); one of 500 or more that leaves the app is. Starlette answers an ``HTTPException``
    a route raises itself, whatever its status: it never gets here (the server span has the 5xx).
    """
    import sentry_sdk
    from sentry_sdk.utils import event_from_exception

    if _is_client_error(exc):
        return
    client = sentry_sdk.get_client()
    if not client.is_active():
        return
    event, hint = event_from_exception(
        exc, client_options=client.options, mechanism={"type": REQUEST_MECHANISM, "handled": False}
    )
    event["request"] = _request_data(scope, client)
    event["transaction"] = _route(scope)
    event["transaction_info"] = {"source": "route" if scope.get("route") is not None else "url"}
    with sentry_sdk.isolation_scope() as isolation:
        if not trace.get_current_span().get_span_context().is_valid:
            isolation.set_new_propagation_context()  # an excluded URL: a trace of its own
        sentry_sdk.capture_event(event, hint=hint)


def _is_client_error(exc: BaseException | None) -> bool:
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


def _request_data(scope: Mapping[str, Any], client: Any) -> dict[str, Any]:
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


def _keep_request_bodies() -> None:
    """Wrap Starlette's ``Request.body`` (once) so a body the app read stays in the ASGI scope for an
    error event: one dict store, only on requests whose body is read (the integration we replace
    read and parsed every body up front)."""
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
    Request.body = body  # type: ignore[method-assign]


# -- linking an exception to its span ----------------------------------------------------------


def _stamp_exceptions_with_their_span() -> None:
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


# -- before_send / before_breadcrumb -------------------------------------------------------------


def _exception_details(hint: Mapping[str, Any]) -> dict[str, Any]:
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


def _current_details() -> dict[str, Any]:
    """The current OTel span and baggage: for events captured without an exception that carries them."""
    span = trace.get_current_span()
    span_context = span.get_span_context()
    details = _identity(getattr(span, "attributes", None))
    if span_context.is_valid:
        details["trace_id"] = trace.format_trace_id(span_context.trace_id)
        details["span_id"] = trace.format_span_id(span_context.span_id)
    return details


def _annotate(event: dict[str, Any], details: Mapping[str, Any]) -> None:
    contexts = event.setdefault("contexts", {})
    trace_id = details.get("trace_id")
    if trace_id and contexts.get("trace", {}).get("trace_id") != trace_id:
        contexts["trace"] = {"trace_id": trace_id, "span_id": details.get("span_id")}
    operation = details.get("operation")
    if operation:
        event.setdefault("tags", {})[OPERATION_TAG] = operation
        audio = {"operation": operation}
        for key, value in details.items():
            if key in semconv.AUDIO_ATTRIBUTES or (key.startswith("phonoglyph.") and key.endswith(".id")):
                audio[key] = value
        contexts[AUDIO_CONTEXT] = audio
    user_id = details.get(semconv.USER_ID)
    if user_id:
        user = event.get("user") if isinstance(event.get("user"), dict) else {}
        user["id"] = user_id
        event["user"] = user


def _before_send(scrubber: Scrubber, event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    exc_info = hint.get("exc_info")
    if exc_info and _is_client_error(exc_info[1]):  # e.g. uvicorn logging a 4xx that left the app
        return None
    try:
        meta = event.pop("_meta", None)  # Sentry's annotations: lengths and remarks, never values
        scrubbed, paths = scrubber.scrub(event)
        if meta is not None:
            scrubbed["_meta"] = meta
        if paths:
            scrubbed.setdefault("extra", {})[SCRUBBED_ATTRIBUTE] = paths
        _annotate(scrubbed, {**_current_details(), **_exception_details(hint)})
        return scrubbed
    except Exception:
        STATS.increment("sentry_events_dropped_unscrubbed")
        _logger.exception("instrumentation error: a Sentry event was dropped because scrubbing failed")
        return None


def _before_breadcrumb(scrubber: Scrubber, crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return scrubber.scrub(crumb)[0]
    except Exception:
        STATS.increment("sentry_breadcrumbs_dropped_unscrubbed")
        return None
