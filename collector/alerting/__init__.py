"""Alerting: rules evaluated over what the collector receives, notifications that survive restarts.

One facade for the collector's wiring (docs/architecture.md, "Alerting")::

    alerting = build_alerting(config.alerts_raw, config.data_dir,
                              webhook_url=config.alert_webhook_url,        # COLLECTOR_ALERT_WEBHOOK_URL
                              slack_url=config.alert_slack_url,            # COLLECTOR_ALERT_SLACK_URL
                              alertmanager_url=config.alertmanager_url,    # COLLECTOR_ALERTMANAGER_URL
                              metrics=metrics)
    if alerting is not None:
        alerting.set_delivery_probe(outbox_oldest_age_s)
        alerting.start()
        ...  # receivers: alerting.observe_events(events); alerting.observe_metrics(request)
        alerting.shutdown(5.0)

The events fed in are the mapped PostHog events: a mapping rule that renames ``<op>_started`` /
``_completed`` / ``_failed`` or drops ``phonoglyph.job.id`` changes what the rules see.
``build_alerting`` returns None when there are no rules (``alerts: {rules: []}``). Parts: ``config``
(the ``alerts:`` section and the default rules), ``windows`` (bounded time buckets), ``engine`` (ingest,
evaluation, state), ``store`` (``alerts.db``), ``notify`` (receivers and the notification outbox),
``report`` (the plain-text view the CLI and the demo print).
``read_alerts(data_dir)`` reads the firing alerts and history of a running collector (the CLI).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from collector.alerting.config import DEFAULT_RULES, AlertsConfig, Rule, default_rules_table, parse_alerts
from collector.alerting.engine import Engine, Transition
from collector.alerting.notify import (
    AlertmanagerNotifier,
    Dispatcher,
    Notifier,
    SlackNotifier,
    WebhookNotifier,
)
from collector.alerting.store import ALERTS_FILE, AlertStore

__all__ = [
    "ALERTS_FILE",
    "DEFAULT_RULES",
    "Alerting",
    "AlertsConfig",
    "Rule",
    "Transition",
    "build_alerting",
    "default_rules_table",
    "parse_alerts",
    "read_alerts",
]

if TYPE_CHECKING:
    from collector.pipeline import Batch

logger = logging.getLogger(__name__)

FIRING_METRIC = "alerts_firing"
"""Gauge ``phonoglyph_collector_alerts_firing{alertname,severity}`` (firing instances per rule)."""


class Alerting:
    """The engine, its evaluation thread and the notification dispatcher, started and stopped together."""

    def __init__(
        self,
        config: AlertsConfig,
        store: AlertStore,
        engine: Engine,
        dispatcher: Dispatcher,
        *,
        metrics: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.engine = engine
        self.dispatcher = dispatcher
        self._metrics = metrics
        self._clock = clock
        self._probe: Callable[[], float | None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- ingest (never raises into the pipeline) ---------------------------------------------------

    def observe_events(self, events: Iterable[Mapping[str, Any]]) -> None:
        try:
            self.engine.observe_events(events)
        except Exception:
            logger.exception("alerting could not observe events")

    def observe_metrics(self, request: ExportMetricsServiceRequest) -> None:
        try:
            self.engine.observe_metrics(request)
        except Exception:
            logger.exception("alerting could not observe metrics")

    def set_delivery_probe(self, probe: Callable[[], float | None]) -> None:
        """``probe()``: age in seconds of the oldest undelivered analytics event, None when none waits."""
        self._probe = probe

    def process(self, batch: Batch) -> None:
        """The pipeline's observer: a committed batch's events, or a metrics request."""
        if batch.signal == "metrics":
            self.observe_metrics(cast(ExportMetricsServiceRequest, batch.request))
        elif batch.events:
            self.observe_events(batch.events)

    # -- evaluation -------------------------------------------------------------------------------

    def evaluate_once(self, now: float | None = None) -> list[Transition]:
        if self._probe is not None:
            try:
                self.engine.observe_delivery(self._probe())
            except Exception:
                logger.exception("alerting: the delivery probe failed")
        transitions = self.engine.evaluate(now)
        if self._metrics is not None:
            for alertname, severity, value in self.engine.metrics_samples():
                self._metrics.set(FIRING_METRIC, value, alertname=alertname, severity=severity)
        if transitions:
            self.dispatcher.wake()
        return transitions

    def start(self) -> None:
        if self._thread is None:
            self.dispatcher.start()
            self._thread = threading.Thread(target=self._run, name="alert-evaluation", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        interval_s = self.config.evaluation_interval_s
        while not self._stop.is_set():
            try:
                self.evaluate_once()
            except Exception:
                logger.exception("alert evaluation failed")
            self._stop.wait(interval_s)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop evaluating, stop the dispatcher (undelivered rows stay for the next start), persist."""
        deadline = time.monotonic() + timeout_s
        self._stop.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self.dispatcher.shutdown(max(0.0, deadline - time.monotonic()))
        try:
            self.engine.flush()
        except Exception:
            logger.exception("alerting could not persist its open starts")
        if self.dispatcher.running() or (self._thread is not None and self._thread.is_alive()):
            logger.warning("alerting threads still busy at shutdown; alerts.db is left open for them")
            return
        self.store.close()

    # -- reading ----------------------------------------------------------------------------------

    def firing(self) -> list[dict[str, Any]]:
        return self.engine.firing()

    def history(self, limit: int = 100, *, after_id: int = 0) -> list[dict[str, Any]]:
        return self.engine.history(limit, after_id=after_id)

    def metrics_samples(self) -> list[tuple[str, str, float]]:
        return self.engine.metrics_samples()


def build_alerting(
    alerts_raw: Any,
    data_dir: str | Path,
    *,
    webhook_url: str | None = None,
    slack_url: str | None = None,
    alertmanager_url: str | None = None,
    metrics: Any = None,
    clock: Callable[[], float] = time.time,
    external_url: str = "",
    alertmanager_refresh_s: float = 60.0,
) -> Alerting | None:
    """Parse the ``alerts:`` section (raises ConfigError), open ``alerts.db``; None when no rules."""
    config = parse_alerts(alerts_raw)
    if not config.rules:
        return None
    notifiers: list[Notifier] = []
    if webhook_url:
        notifiers.append(WebhookNotifier(webhook_url, external_url=external_url))
    if slack_url:
        notifiers.append(SlackNotifier(slack_url))
    if alertmanager_url:
        notifiers.append(AlertmanagerNotifier(alertmanager_url, refresh_s=alertmanager_refresh_s))
    store = AlertStore(Path(data_dir) / ALERTS_FILE)

    def dropped(reason: str, count: int) -> None:
        if metrics is not None:
            metrics.inc("alert_dropped_items_total", count, reason=reason)

    def result(notifier: str, outcome: str) -> None:
        if metrics is not None:
            metrics.inc("alert_notifications_total", notifier=notifier, result=outcome)

    engine = Engine(
        config,
        store,
        notifiers=[notifier.name for notifier in notifiers],
        clock=clock,
        generator_url=external_url,
        on_drop=dropped,
    )
    dispatcher = Dispatcher(store, notifiers, clock=clock, firing=engine.firing, on_result=result)
    return Alerting(config, store, engine, dispatcher, metrics=metrics, clock=clock)


def read_alerts(
    data_dir: str | Path, *, history_limit: int = 100, after_id: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(firing, history newest first) as a running collector last wrote them; empty when alerting never
    ran. ``after_id``: only history entries newer than that ``id`` (``--follow``)."""
    path = Path(data_dir) / ALERTS_FILE
    if not path.exists():
        return [], []
    store = AlertStore(path)
    try:
        return store.firing_snapshots(), store.history(history_limit, after_id=after_id)
    finally:
        store.close()
