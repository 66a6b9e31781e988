"""configure() and shutdown(): build the SDK providers, the export path and Sentry, once."""

from __future__ import annotations

import atexit
import functools
import threading
from dataclasses import dataclass, field

from opentelemetry import _logs, metrics, trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from instrumentation import semconv
from instrumentation._internal import pipeline
from instrumentation._internal.batching import (
    EncodingSpanProcessor,
    QueueingLogRecordProcessor,
    QueueingSpanProcessor,
    stop_retrying,
)
from instrumentation._internal.config import Settings, resolve
from instrumentation._internal.exporters import OtlpHttpLogRecordExporter, OtlpHttpSpanExporter
from instrumentation._internal.guard import guarded, rate_limit_export_logs
from instrumentation._internal.identity import IdentitySpanProcessor
from instrumentation._internal.otel_scrubbing import (
    ScrubbingLogExporter,
    ScrubbingSpanExporter,
    SpanScrubbing,
    scrub_log_record,
)
from instrumentation._internal.propagation import set_global_propagator
from instrumentation._internal.sentry import spans as sentry_spans
from instrumentation._internal.sentry.client import setup_sentry, shutdown_sentry
from instrumentation._internal.signals import install as flush_on_signals
from instrumentation._internal.spool import open_spool
from instrumentation._internal.stats import STATS
from instrumentation.scrubbing import Scrubber, ScrubbingConfig


@dataclass
class Exporters:
    """Where the three signals go; OTLP/HTTP unless a test passes in-memory ones."""

    spans: SpanExporter
    event_records: LogRecordExporter
    metric_reader: MetricReader
    scrub_themselves: bool = False
    """True for ours (they scrub chunk by chunk while encoding); others get the scrubbing wrappers."""


@dataclass
class Installed:
    settings: Settings
    tracer_provider: TracerProvider
    logger_provider: LoggerProvider
    meter_provider: MeterProvider
    scrubber: Scrubber
    sentry_enabled: bool
    span_processor: QueueingSpanProcessor
    event_processor: QueueingLogRecordProcessor
    is_shut_down: bool = field(default=False)


_LOCK = threading.Lock()
INSTALLED: list[Installed] = []
"""Empty until configure() has run; reset only by instrumentation.testing.reset_otel_globals()."""


def otlp_exporters(settings: Settings, scrubber: Scrubber) -> Exporters:
    """OTLP/HTTP exporters to the collector; spans and event records are scrubbed while encoded, and
    event records that cannot be exported wait in the on-disk spool (:mod:`.spool`)."""
    timeout_s = settings.span_queue.export_timeout_s
    return Exporters(
        spans=OtlpHttpSpanExporter(
            endpoint=settings.signal_endpoint("traces"),
            timeout=timeout_s,
            prepare=SpanScrubbing(scrubber),
            one_attempt=True,
        ),
        event_records=OtlpHttpLogRecordExporter(
            endpoint=settings.signal_endpoint("logs"),
            timeout=timeout_s,
            prepare=functools.partial(scrub_log_record, scrubber=scrubber),
            spool=open_spool(
                settings.spool_enabled, settings.spool_dir, settings.spool_max_bytes, settings.service_name
            ),
        ),
        metric_reader=PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=settings.signal_endpoint("metrics"), timeout=timeout_s),
            export_interval_millis=settings.metric_export_interval_s * 1000,
        ),
        scrub_themselves=True,
    )


PIPELINE_METRIC = "phonoglyph.instrumentation.pipeline"
"""Observable counter of ``pipeline_stats()``, one series per counter (attribute ``counter``):
drops, failed exports, spooled and spool-dropped event records, ..."""


def observe_pipeline_stats(meter_provider: MeterProvider) -> None:
    def observe(_options: CallbackOptions) -> list[Observation]:
        return [Observation(count, {"counter": name}) for name, count in STATS.snapshot().items()]

    meter_provider.get_meter("instrumentation").create_observable_counter(
        PIPELINE_METRIC, callbacks=[observe], unit="{item}", description="what the telemetry pipeline dropped, spooled"
    )


def _resource(settings: Settings) -> Resource:
    attributes = {semconv.SERVICE_NAME: settings.service_name}
    if settings.service_version:
        attributes[semconv.SERVICE_VERSION] = settings.service_version
    if settings.environment:
        attributes[semconv.DEPLOYMENT_ENVIRONMENT] = settings.environment
    return Resource.create(attributes)


def install(settings: Settings, scrubber: Scrubber, exporters: Exporters) -> Installed | None:
    """Build and set the global providers (once per process); returns None when already done."""
    with _LOCK:
        if INSTALLED:
            return None
        rate_limit_export_logs()
        span_exporter, event_exporter = exporters.spans, exporters.event_records
        if not exporters.scrub_themselves:
            span_exporter = ScrubbingSpanExporter(span_exporter, scrubber)
            event_exporter = ScrubbingLogExporter(event_exporter, scrubber)
        resource = _resource(settings)

        event_processor = QueueingLogRecordProcessor(event_exporter, settings.event_queue)
        # with ours, the outcome of an operation whose span cannot be exported goes as an event record
        on_undelivered = event_processor.put_records if exporters.scrub_themselves else None
        span_processor = (
            EncodingSpanProcessor(span_exporter, settings.span_queue, on_undelivered)
            if isinstance(span_exporter, OtlpHttpSpanExporter)
            else QueueingSpanProcessor(span_exporter, settings.span_queue, on_undelivered)
        )
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        tracer_provider.add_span_processor(IdentitySpanProcessor())
        tracer_provider.add_span_processor(span_processor)

        logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        logger_provider.add_log_record_processor(event_processor)

        meter_provider = MeterProvider(
            resource=resource, metric_readers=[exporters.metric_reader], shutdown_on_exit=False
        )
        observe_pipeline_stats(meter_provider)

        set_global_propagator()
        trace.set_tracer_provider(tracer_provider)
        _logs.set_logger_provider(logger_provider)
        metrics.set_meter_provider(meter_provider)
        # after the global TracerProvider is set, before anything else touches Sentry
        sentry_enabled = setup_sentry(
            dsn=settings.sentry_dsn,
            environment=settings.environment,
            release=settings.sentry_release,
            tracer_provider=tracer_provider,
            scrubber=scrubber,
            span_exporter=span_exporter,
        )

        pipeline.CURRENT[0] = pipeline.Pipeline.from_providers(tracer_provider, logger_provider, meter_provider)
        installed = Installed(
            settings=settings,
            tracer_provider=tracer_provider,
            logger_provider=logger_provider,
            meter_provider=meter_provider,
            scrubber=scrubber,
            sentry_enabled=sentry_enabled,
            span_processor=span_processor,
            event_processor=event_processor,
        )
        INSTALLED.append(installed)
        return installed


def configure(
    *,
    service_name: str | None = None,
    service_version: str | None = None,
    environment: str | None = None,
    otlp_endpoint: str | None = None,
    sentry_dsn: str | None = None,
    scrubbing: ScrubbingConfig | None = None,
) -> None:
    """Set up tracing, event records, metrics and Sentry for this process; later calls do nothing."""
    with guarded():
        if INSTALLED:
            return
        settings = resolve(
            service_name=service_name,
            service_version=service_version,
            environment=environment,
            otlp_endpoint=otlp_endpoint,
            sentry_dsn=sentry_dsn,
        )
        scrubber = Scrubber(scrubbing or ScrubbingConfig.from_env())
        if install(settings, scrubber, otlp_exporters(settings, scrubber)) is not None:
            atexit.register(shutdown)
            flush_on_signals(shutdown=shutdown, flush=lambda timeout_s: force_flush())  # servers skip atexit


def force_flush() -> None:
    """Export everything queued so far (spans, event records, metrics)."""
    with guarded():
        for installed in INSTALLED:
            installed.span_processor.force_flush()
            for sentry_path in sentry_spans.active_span_paths():  # after the spans it is sent
                sentry_path.force_flush()
            installed.event_processor.force_flush()
            installed.meter_provider.force_flush()


def shutdown(timeout_s: float = 5.0) -> None:
    """Flush and stop every provider, then Sentry. Safe to call more than once."""
    with guarded():
        for installed in INSTALLED:
            if installed.is_shut_down:
                continue
            installed.is_shut_down = True
            installed.tracer_provider.shutdown()
            installed.logger_provider.shutdown()
            for reader in installed.meter_provider._metric_readers:
                stop_retrying(getattr(reader, "_exporter", None))
            installed.meter_provider.shutdown(timeout_millis=timeout_s * 1000)
            if installed.sentry_enabled:
                shutdown_sentry(timeout_s)
