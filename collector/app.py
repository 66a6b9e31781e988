"""The builder: receiver → processors → delivery (outbox, worker) → exporter, wired in one place.

``build_app`` makes the pipeline (docs/architecture.md "Collector pipeline"): the OTLP receiver decodes
and hands each request to a ``Pipeline`` whose processors map it to PostHog events and scrub them; the
pipeline commits the events to the outbox (``OutboxDelivery``: backpressure and storage trouble become
``RetryableError`` 429 and 503) and wakes the delivery worker, which drains the outbox into the exporter.
Once committed, each batch is shown to the alerting observer (docs/architecture.md "Alerting"), which
evaluates its rules on its own thread. The health extension shares the receiver's port (``App.asgi``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from collector.alerting import Alerting, build_alerting
from collector.asgi import Router
from collector.config import CollectorConfig
from collector.delivery.outbox import Outbox, OutboxError, OutboxFullError
from collector.delivery.retry import BatchConfig, RetryConfig
from collector.delivery.worker import DeliveryWorker
from collector.exporters import Exporter
from collector.extensions.health import HealthExtension
from collector.metrics import Metrics
from collector.pipeline import EventsProcessor, Pipeline, Processor, RetryableError
from collector.processors.mapping import MappingProcessor
from collector.processors.scrub import ScrubProcessor
from collector.receivers.otlp_http import OtlpHttpReceiver

__all__ = ["App", "OutboxDelivery", "build_app", "build_exporter"]

logger = logging.getLogger(__name__)


class OutboxDelivery:
    """The pipeline's end: a durable commit to the outbox, then a wake-up for the delivery worker."""

    def __init__(self, outbox: Outbox, worker: DeliveryWorker, *, retry_after_s: int) -> None:
        self._outbox = outbox
        self._worker = worker
        self._retry_after_s = retry_after_s

    def put(self, events: Sequence[Mapping[str, Any]]) -> int:
        """Commit the events; returns how many were new. RetryableError 429 when the outbox is full, 503 on
        storage trouble."""
        try:
            inserted = self._outbox.put(events)
        except OutboxFullError as exc:
            raise RetryableError(429, str(exc), retry_after_s=self._retry_after_s) from None
        except OutboxError as exc:
            logger.warning("outbox error, answering 503: %s", exc)
            raise RetryableError(503, "storage unavailable", retry_after_s=self._retry_after_s) from None
        self._worker.wake()
        return inserted


@dataclass
class App:
    config: CollectorConfig
    metrics: Metrics
    outbox: Outbox
    exporter: Exporter
    exporter_name: str
    worker: DeliveryWorker
    pipeline: Pipeline
    receiver: OtlpHttpReceiver
    alerting: Alerting | None = None
    """None when there are no alert rules (``alerts: {rules: []}``)."""
    asgi: Router = field(init=False)
    """The one ASGI app served: the OTLP receiver and the health extension."""

    def __post_init__(self) -> None:
        self.asgi = Router(self.receiver, HealthExtension(ready=self.ready, render_metrics=self.render_metrics))

    def start(self) -> None:
        self.worker.start()
        if self.alerting is not None:
            self.alerting.start()

    def shutdown(self, timeout_s: float) -> None:
        """Finish in-flight requests, deliver what can be delivered within ``timeout_s``, keep the rest."""
        deadline = time.monotonic() + timeout_s
        self.receiver.shutdown()
        if self.alerting is not None:
            self.alerting.shutdown(min(5.0, max(0.0, deadline - time.monotonic())))
        self.worker.shutdown(max(0.0, deadline - time.monotonic()))
        left = self.outbox.depth()
        if left:
            logger.warning("%d events stay in the outbox for the next start", left)
        self.outbox.close()

    def ready(self) -> bool:
        """The outbox answers and its file and directory are writable."""
        try:
            self.outbox.oldest_age_s()
        except Exception:  # any storage failure means "not ready", never a crash of the probe
            return False
        path = self.config.outbox_path
        return os.access(path.parent, os.W_OK) and os.access(path, os.W_OK)

    def render_metrics(self) -> str:
        try:
            self.worker.refresh_gauges()
        except Exception:  # storage trouble: serve the counters all the same
            logger.warning("cannot read the outbox gauges", exc_info=True)
        return self.metrics.render()


def build_exporter(config: CollectorConfig) -> tuple[Exporter, str]:
    """PostHog when ``POSTHOG_API_KEY`` is set, else the local event store under the data dir."""
    if config.posthog_api_key:
        from collector.exporters.posthog import PostHogExporter

        return PostHogExporter(config.posthog_api_key, config.posthog_host), f"posthog {config.posthog_host}"
    from collector.exporters.local import LocalStoreExporter

    return LocalStoreExporter(config.events_path), f"local store {config.events_path}"


def build_app(
    config: CollectorConfig,
    *,
    exporter: Exporter | None = None,
    retry: RetryConfig = RetryConfig(),
    batch: BatchConfig = BatchConfig(),
    clock: Callable[[], float] = time.time,
    processors: Sequence[Processor] = (),
) -> App:
    """The collector, not started. ``processors`` run after mapping and scrubbing, in order (they see each
    batch's decoded request, metrics requests included, and its events). Raises ConfigError on a bad
    ``alerts:`` section."""
    metrics = Metrics()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    outbox = Outbox(
        config.outbox_path,
        max_bytes=config.limits.outbox_max_bytes,
        dead_letter_max_rows=config.limits.dead_letter_max_rows,
        dead_letter_max_bytes=config.limits.dead_letter_max_bytes,
        clock=clock,
    )
    if exporter is None:
        exporter, exporter_name = build_exporter(config)
    else:
        exporter_name = type(exporter).__name__
    worker = DeliveryWorker(outbox, exporter, retry=retry, batch=batch, metrics=metrics, clock=clock)
    delivery = OutboxDelivery(outbox, worker, retry_after_s=config.limits.retry_after_s)
    alerting = build_alerting(
        config.alerts_raw,
        config.data_dir,
        webhook_url=config.alert_webhook_url,
        slack_url=config.alert_slack_url,
        alertmanager_url=config.alertmanager_url,
        metrics=metrics,
        clock=clock,
    )
    if alerting is not None:
        alerting.set_delivery_probe(outbox.oldest_age_s)
    pipeline = Pipeline(
        [
            MappingProcessor(config.mapping),
            EventsProcessor(ScrubProcessor().process),
            *processors,
        ],
        deliver=delivery.put,
        metrics=metrics,
        observers=[alerting] if alerting is not None else [],
    )
    receiver = OtlpHttpReceiver(pipeline, metrics=metrics, limits=config.limits, auth_token=config.auth_token)
    return App(config, metrics, outbox, exporter, exporter_name, worker, pipeline, receiver, alerting)
