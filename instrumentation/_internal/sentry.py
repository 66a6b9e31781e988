"""Sentry in process: errors linked to the OTel trace, scrubbed, with audio context; spans over OTLP.

``setup_sentry`` runs after the global TracerProvider is set (sentry-sdk 2.75's ``OTLPIntegration``
links events to the current OTel span through ``register_external_propagation_context``). Two
things of the integration are replaced by ours:

- its span exporter: spans go to Sentry's OTLP endpoint through our export queue and the
  :class:`ScrubbingSpanExporter`, never unscrubbed, and without the collector's
  ``OTEL_EXPORTER_OTLP_HEADERS`` / TLS settings;
- its propagator (``sentry-trace`` only): W3C ``traceparent`` + ``baggage`` stay the global
  propagator, and an incoming ``sentry-trace`` is honoured too.

The OTel sampler is the only sampling decision (no ``traces_sample_rate``: Sentry makes no
transactions of its own). ``before_send`` scrubs the whole event and adds what the exception
carries from the operation it left (``exc.__phonoglyph_context__``): tag ``operation``, context
``audio_processing``, the user id and the OTel trace id. The pipeline's own log lines
(``opentelemetry.*``, ``instrumentation.*``) never become Sentry events.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

import requests
from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
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
from instrumentation._internal.batching import QueueingSpanProcessor
from instrumentation._internal.config import QueueConfig
from instrumentation._internal.operations import EXCEPTION_CONTEXT_ATTR
from instrumentation._internal.scrubbing import SCRUBBED_ATTRIBUTE, Scrubber, ScrubbingSpanExporter
from instrumentation._internal.stats import STATS

_logger = logging.getLogger("instrumentation")

EXCEPTION_SPAN_ATTR = "__phonoglyph_span__"
"""Set on an exception when the first OTel span records it: trace/span ids and identity.

A request's error is captured by Sentry's ASGI middleware, outside the server span, after it
ended; this is how the event still gets the request's trace id."""

OPERATION_TAG = "operation"
AUDIO_CONTEXT = "audio_processing"
SENTRY_TRACE_HEADER = "sentry-trace"
SENTRY_OTLP_HEADERS = frozenset({"content-type", "content-encoding", "user-agent", "x-sentry-auth"})
MAX_EXCEPTION_CHAIN = 10

PIPELINE_LOGGERS = ("instrumentation", "instrumentation.*", "opentelemetry.*")
"""Loggers (fnmatch patterns) Sentry's logging integration ignores: the telemetry pipeline's own
lines (an unreachable collector, a failed export) are counters and logs, never Sentry events, and
our own error lines must not come back through before_send."""

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


def _sentry_otlp_exporter(dsn: str, timeout_s: float) -> OTLPSpanExporter:
    from sentry_sdk.consts import VERSION, EndpointType
    from sentry_sdk.utils import Dsn

    auth = Dsn(dsn).to_auth(f"sentry.python/{VERSION}")
    session = SentryOtlpSession()
    exporter = OTLPSpanExporter(
        endpoint=auth.get_api_url(EndpointType.OTLP_TRACES),
        headers={"X-Sentry-Auth": auth.to_header()},
        timeout=timeout_s,
        session=session,
    )
    # OTEL_EXPORTER_OTLP_CERTIFICATE / CLIENT_* are the collector's TLS settings, not Sentry's
    session.verify, session.cert = True, None
    return exporter


def setup_sentry(
    *,
    dsn: str | None,
    environment: str | None,
    release: str | None,
    tracer_provider: TracerProvider,
    scrubber: Scrubber,
) -> bool:
    """Start Sentry when ``dsn`` is set (returns True); without it, do nothing and say nothing."""
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.logging import ignore_logger
    from sentry_sdk.integrations.otlp import OTLPIntegration

    for name in PIPELINE_LOGGERS:
        ignore_logger(name)
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        integrations=[OTLPIntegration(setup_otlp_traces_exporter=False, setup_propagator=False)],
        before_send=functools.partial(_before_send, scrubber),
        before_breadcrumb=functools.partial(_before_breadcrumb, scrubber),
    )
    processor = QueueingSpanProcessor(
        ScrubbingSpanExporter(_sentry_otlp_exporter(dsn, _OTLP_SPAN_QUEUE.export_timeout_s), scrubber),
        _OTLP_SPAN_QUEUE,
    )
    tracer_provider.add_span_processor(processor)
    _active_span_processor[:] = [processor]
    propagate.set_global_textmap(global_propagator())
    _stamp_exceptions_with_their_span()
    return True


def shutdown_sentry(timeout_s: float) -> None:
    """Export the spans still queued for Sentry, then flush, close and unset the Sentry client."""
    import sentry_sdk

    for processor in _active_span_processor:
        processor.force_flush()
    _active_span_processor.clear()
    client = sentry_sdk.get_client()
    if client.is_active():
        client.close(timeout=timeout_s)
        sentry_sdk.get_global_scope().set_client(None)  # Sentry is off until setup_sentry runs again


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
    try:
        meta = event.pop("_meta", None)  # Sentry's annotations: lengths and remarks, never values
        scrubbed, paths = scrubber.scrub(event)
        if meta is not None:
            scrubbed["_meta"] = meta
        if paths:
            scrubbed.setdefault("extra", {})[SCRUBBED_ATTRIBUTE] = paths
        _annotate(scrubbed, {**_current_details(), **_exception_details(hint)})
        return scrubbed
    except Exception:  # noqa: BLE001 - an event we could not scrub must not leave the process
        STATS.increment("sentry_events_dropped_unscrubbed")
        _logger.exception("instrumentation error: a Sentry event was dropped because scrubbing failed")
        return None


def _before_breadcrumb(scrubber: Scrubber, crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return scrubber.scrub(crumb)[0]
    except Exception:  # noqa: BLE001
        STATS.increment("sentry_breadcrumbs_dropped_unscrubbed")
        return None
