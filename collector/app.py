"""One builder wires the fixed order: receiver → processors → outbox → delivery worker → exporter."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from collector.config import CollectorConfig
from collector.delivery.outbox import Outbox
from collector.delivery.retry import BatchConfig, RetryConfig
from collector.delivery.worker import DeliveryWorker
from collector.exporters import Exporter
from collector.metrics import Metrics
from collector.processors.scrub import ScrubProcessor
from collector.receivers.otlp_http import OtlpHttpReceiver

logger = logging.getLogger(__name__)


@dataclass
class App:
    config: CollectorConfig
    metrics: Metrics
    outbox: Outbox
    exporter: Exporter
    exporter_name: str
    worker: DeliveryWorker
    receiver: OtlpHttpReceiver = field(init=False)

    def start(self) -> None:
        self.worker.start()

    def shutdown(self, timeout_s: float) -> None:
        """Finish in-flight mapping, deliver what can be delivered within ``timeout_s``, keep the rest."""
        deadline = time.monotonic() + timeout_s
        self.receiver.shutdown()
        self.worker.shutdown(max(0.0, deadline - time.monotonic()))
        left = self.outbox.depth()
        if left:
            logger.warning("%d events stay in the outbox for the next start", left)
        self.outbox.close()

    def put(self, events: Sequence[dict]) -> int:
        inserted = self.outbox.put(events)
        self.worker.wake()
        return inserted

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
) -> App:
    metrics = Metrics()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    outbox = Outbox(config.outbox_path, max_bytes=config.limits.outbox_max_bytes, clock=clock)
    if exporter is None:
        exporter, exporter_name = build_exporter(config)
    else:
        exporter_name = type(exporter).__name__
    worker = DeliveryWorker(outbox, exporter, retry=retry, batch=batch, metrics=metrics, clock=clock)
    scrub = ScrubProcessor()
    app = App(config, metrics, outbox, exporter, exporter_name, worker)
    app.receiver = OtlpHttpReceiver(
        put=app.put,
        metrics=metrics,
        limits=config.limits,
        rules=config.mapping,
        auth_token=config.auth_token,
        scrub=scrub.process,
        ready=app.ready,
        render_metrics=app.render_metrics,
    )
    return app
