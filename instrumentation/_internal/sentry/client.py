"""setup_sentry() and shutdown_sentry(): start the Sentry client and wire our parts into it.

``setup_sentry`` runs after the global TracerProvider is set (sentry-sdk's ``OTLPIntegration``
links events to the current OTel span through ``register_external_propagation_context``). Three
things of sentry-sdk are replaced by ours:

- its span exporter: the span path (:mod:`.spans`), or none with ``PHONOGLYPH_SENTRY_SPANS=off``;
- its propagator (``sentry-trace`` only): W3C ``traceparent`` + ``baggage`` stay the global
  propagator, and an incoming ``sentry-trace`` is honoured too (:mod:`.propagation`);
- its web-framework integrations (Starlette, FastAPI, ...: an ASGI middleware, a scope and event
  processors on every request): off. An error that leaves an instrumented app is reported from
  ``fastapi.REQUEST_ERROR_HANDLERS`` instead (:mod:`.request_errors`), while the server span is
  current, with the request data those integrations attach. Each request of an instrumented app
  runs in its own Sentry isolation scope (``fastapi.REQUEST_SCOPES``), so an event's breadcrumbs
  are its request's own (scrubbed) log lines. An app that is not instrumented is reported only
  through the server's error log line (the logging integration).

The OTel sampler is the only sampling decision (no ``traces_sample_rate``: Sentry makes no
transactions of its own). The pipeline's own log lines (``opentelemetry.*``, ``instrumentation.*``)
never become Sentry events, and neither does a WebSocket client that left normally (the
``WebSocketDisconnect`` uvicorn logs at ERROR when a handler lets it out). The pipeline's frames
(the server-span layer around every request) are not in-app: a stack trace starts in the app's code.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, Final

from opentelemetry.sdk.trace import TracerProvider

from instrumentation._internal import config
from instrumentation._internal import fastapi as fastapi_layer
from instrumentation._internal.propagation import set_global_propagator
from instrumentation._internal.sentry import spans
from instrumentation._internal.sentry.events import before_breadcrumb, before_send
from instrumentation._internal.sentry.exceptions import stamp_exceptions_with_their_span
from instrumentation._internal.sentry.request_errors import keep_request_bodies, report_request_error
from instrumentation.scrubbing import Scrubber

PIPELINE_LOGGERS: Final = ("instrumentation", "opentelemetry")
"""Loggers (with their children) whose lines never become Sentry events or breadcrumbs: the telemetry
pipeline's own lines (an unreachable collector, a failed export) are counters and logs, and our own
error lines must not come back through before_send. Dropped by name in ``before_send`` and
``before_breadcrumb``: Sentry's ``ignore_logger`` patterns would cost an ``fnmatch`` per pattern on
every log line of the app."""

ACCESS_LOGGERS: Final = ("uvicorn.access", "gunicorn.access", "hypercorn.access")
"""A server's line per request: never an event (INFO), and as a breadcrumb it is written after the
response started, in the request's own isolation scope, which then ends. Ignored by exact name, which
Sentry's logging integration checks before doing anything else with a line."""


def is_pipeline_logger(name: str) -> bool:
    return any(name == prefix or name.startswith(f"{prefix}.") for prefix in PIPELINE_LOGGERS)


def drop_pipeline_breadcrumbs(
    callback: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None],
) -> Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None]:
    """``before_breadcrumb`` that first drops a crumb of the pipeline's own work: made while instrumentation
    is suppressed (every export: our export queues and the SDK's metric reader suppress it, on their
    threads and on a flushing caller's), or by a pipeline logger. sentry-sdk records an ``httplib`` crumb
    for each export request, in its shared isolation scope: kept, such crumbs would appear in every error
    event and be copied into each request's scope."""
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled

    drop_lines = drop_pipeline_lines(callback)

    def drop_then_call(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
        if not is_instrumentation_enabled():
            return None
        return drop_lines(crumb, hint)

    return drop_then_call


def drop_pipeline_lines(
    callback: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None],
) -> Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None]:
    """``before_send`` / ``before_breadcrumb`` that first drops what a pipeline logger's line made."""

    def drop_then_call(item: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
        record = hint.get("log_record") if hint else None
        if record is not None and is_pipeline_logger(getattr(record, "name", "")):
            return None
        return callback(item, hint)

    return drop_then_call


WEB_FRAMEWORK_INTEGRATIONS: Final = frozenset(
    {
        "aiohttp", "bottle", "chalice", "django", "falcon", "fastapi", "flask", "litestar",
        "pyramid", "quart", "sanic", "starlette", "starlite", "tornado",
    }
)  # fmt: skip
"""sentry-sdk integrations (by identifier) that hook every request: never enabled by setup_sentry."""

NOT_IN_APP: Final = ("instrumentation",)
"""Module prefixes whose frames Sentry marks as not in-app: our own, whoever runs the app."""


def drop_normal_websocket_close(
    before_send: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None],
) -> Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None]:
    """``before_send`` that first drops an event of a normal WebSocket close (the client left)."""

    def drop_then_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
        exc_info = hint.get("exc_info")
        if exc_info and fastapi_layer.is_normal_close(exc_info[1]):
            return None
        return before_send(event, hint)

    return drop_then_send


def web_framework_integrations() -> list[Any]:
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
    span_exporter: object = None,
) -> bool:
    """Start Sentry when ``dsn`` is set (returns True); without it, do nothing and say nothing.

    ``send_spans`` (default: ``PHONOGLYPH_SENTRY_SPANS``, on) adds the span path to Sentry's OTLP
    endpoint (sending what ``span_exporter``, the collector's, encodes when it is ours: :mod:`.spans`);
    off, Sentry gets errors only.
    """
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.logging import ignore_logger, ignore_logger_for_sentry_logs
    from sentry_sdk.integrations.otlp import OTLPIntegration

    if send_spans is None:
        send_spans = config.read(config.SENTRY_SPANS)
    for name in ACCESS_LOGGERS:
        ignore_logger(name)
        ignore_logger_for_sentry_logs(name)
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        integrations=[OTLPIntegration(setup_otlp_traces_exporter=False, setup_propagator=False)],
        disabled_integrations=web_framework_integrations(),
        in_app_exclude=list(NOT_IN_APP),
        before_send=drop_pipeline_lines(drop_normal_websocket_close(functools.partial(before_send, scrubber))),  # type: ignore[arg-type]
        before_breadcrumb=drop_pipeline_breadcrumbs(functools.partial(before_breadcrumb, scrubber)),
        transport=_transport_without_connection_retries(),
    )
    if send_spans:
        spans.start_span_path(dsn, tracer_provider, scrubber, span_exporter)
    set_global_propagator(sentry_trace=True)
    stamp_exceptions_with_their_span()
    keep_request_bodies()
    if report_request_error not in fastapi_layer.REQUEST_ERROR_HANDLERS:
        fastapi_layer.REQUEST_ERROR_HANDLERS.append(report_request_error)
    from instrumentation._internal.sentry.scopes import RequestScope

    if RequestScope not in fastapi_layer.REQUEST_SCOPES:
        fastapi_layer.REQUEST_SCOPES.append(RequestScope)
    return True


SHUTDOWN_FLUSH_S: Final = 0.75
"""At shutdown, the longest Sentry's queued events are waited for: an unreachable Sentry never holds
the process up (``shutdown()`` returns within about 2 s)."""


def _transport_without_connection_retries() -> type:
    """sentry-sdk's HTTP transport with one connection attempt per envelope: urllib3's default
    three retries log a warning each when Sentry is unreachable, and take their time at shutdown."""
    import urllib3
    from sentry_sdk.transport import HttpTransport

    class OneAttemptHttpTransport(HttpTransport):
        def _get_pool_options(self) -> dict[str, Any]:
            options = super()._get_pool_options()
            options["retries"] = urllib3.Retry(total=0, redirect=False)
            return options

    return OneAttemptHttpTransport


def _report_exception_in_flight(client: Any) -> None:
    """``shutdown()`` called from a ``finally:`` (or an ``except:``) while an error ends the program: report
    that error now, as unhandled. Sentry's ``sys.excepthook`` would see it only after the client is
    closed. An error the program already reported is dropped by Sentry's dedupe integration."""
    import sentry_sdk
    from sentry_sdk.utils import event_from_exception

    exc = sys.exc_info()[1]
    if not isinstance(exc, Exception):  # none, or SystemExit / KeyboardInterrupt: not an error
        return
    event, hint = event_from_exception(
        exc, client_options=client.options, mechanism={"type": "shutdown", "handled": False}
    )
    sentry_sdk.capture_event(event, hint=hint)


def shutdown_sentry(timeout_s: float) -> None:
    """Export the spans still queued for Sentry, then flush, close and unset the Sentry client."""
    import sentry_sdk

    while report_request_error in fastapi_layer.REQUEST_ERROR_HANDLERS:
        fastapi_layer.REQUEST_ERROR_HANDLERS.remove(report_request_error)
    from instrumentation._internal.sentry.scopes import RequestScope

    while RequestScope in fastapi_layer.REQUEST_SCOPES:
        fastapi_layer.REQUEST_SCOPES.remove(RequestScope)
    spans.stop_span_path()
    client = sentry_sdk.get_client()
    if client.is_active():
        _report_exception_in_flight(client)
        client.close(timeout=min(timeout_s, SHUTDOWN_FLUSH_S))
        sentry_sdk.get_global_scope().set_client(None)  # Sentry is off until setup_sentry runs again
