"""Notifications: three receivers and the dispatcher that drains the durable notification outbox.

Each firing or resolved transition is one row per configured notifier in ``alerts.db`` (written in the
same transaction as the transition, see store.py). The dispatcher sends a notifier's rows in order,
one at a time: a receiver that is down or answers 5xx/429/408 is retried with capped exponential
backoff and jitter, and later rows wait behind it, so a resolution never overtakes its firing. A row is
deleted only after a 2xx, so a restart resends what was not acknowledged; a crash between the 2xx and
the delete can send one notification twice, which receivers of the Alertmanager format collapse by the
stable ``fingerprint`` (and Alertmanager itself by the label set) rather than opening a second alert.
Another 4xx is a permanent refusal: the row is kept, marked failed, and counted.

Receivers (docs/architecture.md, "Alerting"):

- ``WebhookNotifier``: the Alertmanager webhook format (version "4"), one alert a message;
- ``SlackNotifier``: a Slack incoming-webhook message, readable text plus blocks;
- ``AlertmanagerNotifier``: ``POST {url}/api/v2/alerts``. Alertmanager resolves an alert that is not
  re-sent within its ``resolve_timeout``, so while alerts fire the dispatcher re-pushes them every
  ``refresh_s`` (not durable: the next push repeats it); a resolution is pushed once, durably, with
  ``endsAt`` set.

HTTP goes through ``requests`` with a timeout, inside ``suppress_instrumentation()`` so the collector
never traces its own notifications.
"""

from __future__ import annotations

import logging
import random as _random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import requests
from opentelemetry.instrumentation.utils import suppress_instrumentation

from collector.alerting.engine import rfc3339
from collector.alerting.store import AlertStore

__all__ = [
    "AlertmanagerNotifier",
    "Dispatcher",
    "Notifier",
    "NotifyError",
    "SlackNotifier",
    "WebhookNotifier",
    "alert_annotations",
    "backoff_s",
]

logger = logging.getLogger(__name__)

ZERO_TIME = "0001-01-01T00:00:00Z"
"""``endsAt`` of a firing alert in the webhook format (Go's zero time, as Alertmanager writes it)."""
DEFAULT_TIMEOUT_S = 10.0
_RETRYABLE_STATUS = frozenset({408, 425, 429})


class NotifyError(Exception):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Notifier(Protocol):
    name: str

    def send(self, alert: Mapping[str, Any]) -> None: ...


def _post(url: str, body: Any, timeout_s: float) -> None:
    try:
        with suppress_instrumentation():
            response = requests.post(url, json=body, timeout=timeout_s)
    except requests.RequestException as exc:
        raise NotifyError(f"{type(exc).__name__}: {exc}", retryable=True) from None
    if 200 <= response.status_code < 300:
        return
    retryable = response.status_code >= 500 or response.status_code in _RETRYABLE_STATUS
    raise NotifyError(f"HTTP {response.status_code}: {response.text[:200]}", retryable=retryable)


def alert_annotations(alert: Mapping[str, Any]) -> dict[str, str]:
    """The alert's annotations: summary, measured value, condition, example trace ids, filled links."""
    result = {
        "summary": str(alert["summary"]),
        "value": str(alert["value_text"]),
        "description": str(alert["condition"]),
        "trace_ids": ",".join(alert.get("trace_ids") or ()),
    }
    for name, urls in (alert.get("links") or {}).items():
        if urls:
            result[name] = " ".join(urls)
    return result


def _ends_at(alert: Mapping[str, Any]) -> str:
    return ZERO_TIME if alert.get("ends_at") is None else rfc3339(alert["ends_at"])


class WebhookNotifier:
    """Alertmanager's webhook payload, so any receiver of Alertmanager webhooks accepts it."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        *,
        receiver: str = "phonoglyph-collector",
        external_url: str = "",
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.receiver = receiver
        self.external_url = external_url
        self.timeout_s = timeout_s

    def payload(self, alert: Mapping[str, Any]) -> dict[str, Any]:
        labels = dict(alert["labels"])
        notes = alert_annotations(alert)
        return {
            "version": "4",
            "groupKey": '{}:{alertname="' + str(alert["alertname"]) + '"}',
            "truncatedAlerts": 0,
            "status": alert["status"],
            "receiver": self.receiver,
            "groupLabels": {"alertname": alert["alertname"]},
            "commonLabels": labels,
            "commonAnnotations": notes,
            "externalURL": self.external_url,
            "alerts": [
                {
                    "status": alert["status"],
                    "labels": labels,
                    "annotations": notes,
                    "startsAt": rfc3339(alert["starts_at"]),
                    "endsAt": _ends_at(alert),
                    "generatorURL": alert.get("generator_url") or "",
                    "fingerprint": alert["fingerprint"],
                }
            ],
        }

    def send(self, alert: Mapping[str, Any]) -> None:
        _post(self.url, self.payload(alert), self.timeout_s)


class SlackNotifier:
    """A Slack incoming-webhook message: the same facts as the webhook, as text and blocks."""

    name = "slack"

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s

    @staticmethod
    def text(alert: Mapping[str, Any]) -> str:
        firing = alert["status"] == "firing"
        head = "FIRING" if firing else "RESOLVED"
        icon = ":rotating_light:" if firing else ":white_check_mark:"
        lines = [f"{icon} *{head}* [{alert['severity']}] *{alert['alertname']}*", str(alert["summary"])]
        lines.append(f"Value: {alert['value_text']} (rule: {alert['condition']})")
        lines.append(f"Since: {rfc3339(alert['starts_at'])}")
        if not firing and alert.get("ends_at") is not None:
            lines.append(f"Resolved: {rfc3339(alert['ends_at'])}")
        if alert.get("trace_ids"):
            lines.append("Traces: " + ", ".join(alert["trace_ids"]))
        for name, urls in (alert.get("links") or {}).items():
            if urls:
                lines.append(f"{name}: " + " ".join(f"<{url}>" for url in urls))
        lines.append(f"Fingerprint: {alert['fingerprint']}")
        return "\n".join(lines)

    def payload(self, alert: Mapping[str, Any]) -> dict[str, Any]:
        text = self.text(alert)
        return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}

    def send(self, alert: Mapping[str, Any]) -> None:
        _post(self.url, self.payload(alert), self.timeout_s)


class AlertmanagerNotifier:
    """Pushes to a real Alertmanager (``POST /api/v2/alerts``): routing, grouping, silences are its own."""

    name = "alertmanager"

    def __init__(self, url: str, *, refresh_s: float = 60.0, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s

    @staticmethod
    def alert_body(alert: Mapping[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "labels": dict(alert["labels"]),
            "annotations": alert_annotations(alert),
            "startsAt": rfc3339(alert["starts_at"]),
            "generatorURL": alert.get("generator_url") or "",
        }
        if alert.get("ends_at") is not None:
            body["endsAt"] = rfc3339(alert["ends_at"])
        return body

    def push(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        _post(self.url, [self.alert_body(alert) for alert in alerts], self.timeout_s)

    def send(self, alert: Mapping[str, Any]) -> None:
        self.push([alert])


def backoff_s(
    attempts: int,
    *,
    initial_s: float = 1.0,
    max_s: float = 300.0,
    multiplier: float = 2.0,
    jitter: float = 0.2,
    random: Callable[[], float] = _random.random,
) -> float:
    """Seconds before the next try after ``attempts`` failures: capped exponential, spread by +-jitter."""
    try:
        base = min(initial_s * multiplier ** max(0, attempts - 1), max_s)
    except OverflowError:
        base = max_s
    return base * (1 + jitter * (2 * random() - 1))


class Dispatcher:
    """Drains the notification outbox (``deliver_due``) and re-pushes firing alerts to Alertmanager."""

    MAX_PER_PASS = 100

    def __init__(
        self,
        store: AlertStore,
        notifiers: Sequence[Notifier],
        *,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
        max_backoff_s: float = 300.0,
        firing: Callable[[], list[dict[str, Any]]] | None = None,
        on_result: Callable[[str, str], None] | None = None,
    ) -> None:
        """``firing``: the currently firing alerts (for Alertmanager's re-push); ``on_result(notifier,
        result)`` counts ``sent``/``retried``/``failed``/``refreshed``."""
        self.store = store
        self.notifiers = {notifier.name: notifier for notifier in notifiers}
        self._clock = clock
        self._random = random
        self._max_backoff_s = max_backoff_s
        self._firing = firing or (lambda: [])
        self._on_result = on_result or (lambda notifier, result: None)
        self._last_refresh: dict[str, float] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def deliver_due(self, now: float | None = None) -> int:
        """Send every due notification, in order per notifier; returns how many were delivered."""
        sent = 0
        for name, notifier in self.notifiers.items():
            for _ in range(self.MAX_PER_PASS):
                if self._stop.is_set():
                    return sent
                row = self.store.head_notification(name)
                at = self._clock() if now is None else now
                if row is None or row.next_attempt_at > at:
                    break
                try:
                    notifier.send(row.alert)
                except NotifyError as exc:
                    if exc.retryable:
                        delay = backoff_s(row.attempts + 1, max_s=self._max_backoff_s, random=self._random)
                        self.store.retry_later(row.id, at + delay, str(exc))
                        self._on_result(name, "retried")
                        logger.warning("alert notification to %s failed (retry in %.0f s): %s", name, delay, exc)
                        break
                    self.store.give_up(row.id, str(exc))
                    self._on_result(name, "failed")
                    logger.error("alert notification to %s refused, not retried: %s", name, exc)
                    continue
                self.store.delivered(row.id)
                self._on_result(name, "sent")
                sent += 1
        return sent

    def refresh(self, now: float | None = None) -> None:
        """Re-push the firing alerts to notifiers that need it (Alertmanager), at most every refresh_s."""
        at = self._clock() if now is None else now
        for name, notifier in self.notifiers.items():
            refresh_s = getattr(notifier, "refresh_s", None)
            push = getattr(notifier, "push", None)
            if refresh_s is None or push is None or at - self._last_refresh.get(name, float("-inf")) < refresh_s:
                continue
            self._last_refresh[name] = at
            alerts = self._firing()
            if not alerts:
                continue
            try:
                push(alerts)
            except NotifyError as exc:
                logger.warning("re-pushing firing alerts to %s failed: %s", name, exc)
                continue
            self._on_result(name, "refreshed")

    def next_due_at(self) -> float | None:
        """When the earliest head of a notifier's queue is due (rows behind a head wait for it)."""
        heads = [self.store.head_notification(name) for name in self.notifiers]
        due = [row.next_attempt_at for row in heads if row is not None]
        return min(due) if due else None

    # -- thread -----------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="alert-notifications", daemon=True)
            self._thread.start()

    def shutdown(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
                self.deliver_due()
                due = self.next_due_at()
            except Exception:  # a notification problem must never stop the loop
                logger.exception("alert notification pass failed")
                due = None
            wait_s = 5.0 if due is None else min(5.0, max(0.05, due - self._clock()))
            self._wake.wait(wait_s)
            self._wake.clear()
