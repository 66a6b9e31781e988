"""A tiny thread-safe metrics registry rendered as Prometheus text (exposition format 0.0.4).

Every name is prefixed with ``phonoglyph_collector_``. Names ending in ``_total`` are counters
(``inc``); the others are gauges (``set``). Labels are keyword arguments with string values.
"""

from __future__ import annotations

import threading

PREFIX = "phonoglyph_collector_"

HELP = {
    "alerts_firing": "Firing alert instances per rule.",
    "alert_notifications_total": "Alert notification attempts, by notifier and result.",
    "alert_dropped_items_total": "Items the alerting engine let go to stay bounded, by reason.",
    "received_spans_total": "Spans received over OTLP.",
    "received_log_records_total": "Log records received over OTLP.",
    "received_metric_points_total": "Metric data points received over OTLP (counted, not forwarded).",
    "mapped_events_total": "PostHog events derived from spans and event records.",
    "queued_events_total": "Events committed to the outbox (each uuid once a request).",
    "delivered_events_total": "Events acknowledged by the exporter.",
    "retried_batches_total": "Batches rescheduled after a retryable failure.",
    "dead_lettered_events_total": "Events moved to the dead-letter table, by reason.",
    "dead_letters": "Events held in the dead-letter table (bounded by limits.dead_letter_max_rows and _max_bytes).",
    "dead_letters_dropped_total": "Oldest dead letters deleted to keep the dead-letter table within its bounds.",
    "dropped_items_total": "Items received but not turned into events, by reason.",
    "rejected_requests_total": "Requests answered with an error status, by status.",
    "export_errors_total": "Failed export attempts, by kind.",
    "outbox_depth": "Events waiting in the outbox.",
    "outbox_bytes": "Bytes held by the outbox.",
    "outbox_oldest_age_seconds": "Age of the oldest event in the outbox.",
    "delivery_lag_seconds": "Time from the oldest event timestamp in the last delivered batch to its delivery.",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_number(value: float) -> str:
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


class Metrics:
    """Counters and gauges keyed by (name, sorted labels); safe to call from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}

    def inc(self, name: str, value: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items())) if labels else ()
        with self._lock:
            series = self._values.setdefault(name, {})
            series[key] = series.get(key, 0) + value

    def set(self, name: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items())) if labels else ()
        with self._lock:
            self._values.setdefault(name, {})[key] = value

    def value(self, name: str, **labels: str) -> float:
        """The current value of one series (0 when never touched): for tests and the CLI."""
        key = tuple(sorted(labels.items())) if labels else ()
        with self._lock:
            return self._values.get(name, {}).get(key, 0)

    def render(self) -> str:
        with self._lock:
            snapshot = {name: dict(series) for name, series in self._values.items()}
        lines: list[str] = []
        for name in sorted(snapshot):
            full_name = PREFIX + name
            if name in HELP:
                lines.append(f"# HELP {full_name} {HELP[name]}")
            lines.append(f"# TYPE {full_name} {'counter' if name.endswith('_total') else 'gauge'}")
            for labels, value in sorted(snapshot[name].items()):
                label_text = ",".join(f'{key}="{_escape(str(val))}"' for key, val in labels)
                series_name = f"{full_name}{{{label_text}}}" if label_text else full_name
                lines.append(f"{series_name} {_format_number(value)}")
        return "\n".join(lines) + "\n"
