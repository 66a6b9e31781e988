"""The alerting engine: cheap ingest from the pipeline, rule evaluation, alert state kept across restarts.

Ingest (receiver threads, one lock, O(1) an item, docs/architecture.md "Alerting"):

- ``observe_events``: mapped PostHog events. ``<op>_completed`` / ``<op>_failed`` add to the operation's
  5 s count buckets and latency histogram; ``<op>_started`` enters the open-start table, which the
  outcome of the same operation leaves again. Starts and outcomes are matched by the job id
  (``phonoglyph.job.id``) when they carry one, because a render starts in the api (its
  ``render_started`` product event) and ends in the worker, and a retried job starts again under
  another span; otherwise by (trace id, span id). The open-start table is bounded (the oldest start is
  evicted, counted) and a start older than ``open_start_ttl_s`` expires (counted), which also ends a
  ``stalled`` alert about it. Bucket time is the engine's clock, not the event's timestamp, so a late
  or clock-skewed sender cannot place counts outside the window.
- Outcomes are remembered, because spans and event records travel in separate batches and a start may
  arrive after its outcome: it then opens nothing (unless its timestamp is later than the outcome's: a
  retry). Only a start can make a remembered outcome matter, so two bounded tables, one lookup each:
  ``_finished`` keeps the outcomes of operations seen started (any ``<op>_started``, or found in
  alerts.db at startup; at most ``max_series`` operations, the least recently started forgotten) for
  ``FINISHED_KEEP_S`` (900 s), at most ``max_finished`` (100,000, the oldest evicted), persisted
  (alerts.db keeps that many rows at most and loads the newest that many at startup);
  ``_recent_finished`` keeps every other outcome, the last ``max_recent_finished`` (10,000), not
  persisted: it covers a start arriving seconds after its outcome for an operation not yet seen
  started. The collector bench's 4,000 outcomes/s have no starts and only pass through it. Evictions
  are counted (``finished_evicted``, ``recent_evicted``, ``operation_evicted``) and reported at each
  evaluation.
- ``observe_metrics``: OTLP metrics. The histogram ``http.server.request.duration`` gives request and
  5xx counts per route (CUMULATIVE points are differenced per series; a count that goes down or a new
  start time is a restart and counts from zero; a series first seen that began before this engine
  did is only a baseline, so a collector restart replays no history); gauges ``phonoglyph.jobs.queued``
  and ``phonoglyph.jobs.oldest_queued_age`` keep their last value per job kind (``queue_age`` rules).
- ``observe_delivery``: the age of the oldest undelivered analytics event.

Evaluation (``evaluate``) turns each rule into instances (one per operation or route) that move
inactive -> pending (``for_s``) -> firing -> resolved. Flap damping: a firing instance resolves only
once its condition has been false for ``keep_firing_for_s`` (default 60 s), so a rate hovering at the
threshold notifies once rather than every evaluation. After a restart the windows are empty, so a
firing windowed alert is not resolved before its window has filled again. Each transition, its
history row and one notification row per notifier commit in one SQLite transaction (store.py); the
in-memory state changes only after that commit. A firing instance re-notifies every
``repeat_interval_s``. The open-start and finished tables are written to SQLite as deltas at each
evaluation (and at ``flush``), never per event.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from collector.alerting.config import ALL, AlertsConfig, Rule, fill_link
from collector.alerting.store import AlertStore, InstanceRow, OpenStart
from collector.alerting.windows import CountWindow, LatencyWindow, latency_bin

__all__ = ["Engine", "Transition", "fingerprint", "rfc3339"]

logger = logging.getLogger(__name__)

HTTP_DURATION = "http.server.request.duration"
GAUGES = ("phonoglyph.jobs.queued", "phonoglyph.jobs.oldest_queued_age")
JOB_ID = "phonoglyph.job.id"
JOB_KIND = "phonoglyph.job.kind"
QUEUE_AGE = "phonoglyph.jobs.oldest_queued_age"
FINISHED_KEEP_S = 900.0
"""How long an outcome of an operation seen started is remembered (across restarts too) to ignore its
start arriving after it."""
MAX_FINISHED = 100_000
"""Outcomes of operations seen started remembered at most (in memory and rows in alerts.db)."""
MAX_RECENT_FINISHED = 10_000
"""Outcomes of any operation remembered at most in the recency table (not persisted)."""
STALE_GAUGE_S = 300.0
"""A queue gauge not refreshed for this long (the api is down or stopped exporting) is not trusted."""
MAX_EXAMPLES = 5
_CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_NO_ROUTE = "(no route)"


def rfc3339(seconds: float) -> str:
    """Epoch seconds → ``2026-12-06T01:02:03.456Z``."""
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_MASK64 = 2**64 - 1


def fingerprint(labels: Mapping[str, str]) -> str:
    """The alert's identity: Alertmanager's own fingerprint of the label set (FNV-1a 64 over the sorted
    names and values, each followed by 0xff, as prometheus/common's ``LabelSet.Fingerprint``), so the
    webhook's ``fingerprint`` is the one Alertmanager shows for the same alert."""
    value = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode():
                value = ((value ^ byte) * _FNV_PRIME) & _MASK64
            value = ((value ^ 0xFF) * _FNV_PRIME) & _MASK64
    return f"{value:016x}"


@dataclass(frozen=True)
class Transition:
    """A notification-worthy change: ``status`` is firing (``repeat`` True for a re-notification) or resolved."""

    rule: str
    subject: str
    status: str
    snapshot: dict[str, Any]
    repeat: bool = False


@dataclass
class _Figure:
    active: bool
    value: float | None
    text: str
    trace_ids: tuple[str, ...]


_UNRESOLVED: Any = object()
"""``_Tally.latency`` before the operation's latency series is looked up."""


class _Tally:
    """One operation's outcomes in one ``observe_events`` call, added to its windows at the end."""

    __slots__ = ("counts", "slow_threshold", "added", "latency", "bins")

    def __init__(self, counts: CountWindow | None, slow_threshold: float) -> None:
        self.counts = counts
        """The operation's outcome counts; None when the series limit left it out."""
        self.slow_threshold = slow_threshold
        self.added: dict[str, float] = {}
        self.latency: LatencyWindow | None = _UNRESOLVED
        """The operation's latency series once looked up (None: left out by the series limit)."""
        self.bins: dict[int, float] = {}


class Engine:
    def __init__(
        self,
        config: AlertsConfig,
        store: AlertStore,
        *,
        notifiers: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        bucket_s: float = 5.0,
        max_series: int = 1000,
        max_open_starts: int = 10_000,
        open_start_ttl_s: float = 6 * 3600.0,
        max_finished: int = MAX_FINISHED,
        max_recent_finished: int = MAX_RECENT_FINISHED,
        generator_url: str = "",
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        """``notifiers``: names that get one notification row per transition; ``on_drop(reason, n)``:
        counts what bounded tables evict (open starts ``evicted``/``expired``, ``series_limit``, remembered
        outcomes ``finished_evicted``/``recent_evicted``, operations seen started ``operation_evicted``)."""
        self.config = config
        self.rules = config.rules
        self.store = store
        self.notifiers = tuple(notifiers)
        self._clock = clock
        self._bucket_s = bucket_s
        self._max_series = max_series
        self._max_open_starts = max_open_starts
        self._open_start_ttl_s = open_start_ttl_s
        self._max_finished = max_finished
        self._max_recent_finished = max_recent_finished
        self._generator_url = generator_url
        self._on_drop = on_drop or (lambda reason, count: None)
        self._lock = threading.Lock()
        self._started_at = clock()
        windows = [rule.window_s for rule in self.rules if rule.window_s] or [600.0]
        self._horizon_s = max(windows)
        self._outcomes: dict[str, CountWindow] = {}
        self._latency: dict[str, LatencyWindow] = {}
        self._http: dict[str, CountWindow] = {}
        self._failed_examples: dict[str, deque[tuple[float, str]]] = {}
        self._slow_examples: dict[str, deque[tuple[float, str, float]]] = {}
        self._http_examples: dict[str, deque[tuple[float, str]]] = {}
        self._slow_threshold: dict[str, float] = {}
        self._ignored_types: dict[str, frozenset[str]] = {}  # operation or "*" -> error types counted apart
        for rule in self.rules:
            if rule.when == "failure_rate" and rule.operation and rule.ignore_error_types:
                previous_types = self._ignored_types.get(rule.operation, frozenset())
                self._ignored_types[rule.operation] = previous_types | rule.ignore_error_types
            if rule.when == "latency_p95" and rule.operation:
                previous = self._slow_threshold.get(rule.operation, rule.above_ms)
                self._slow_threshold[rule.operation] = min(previous, rule.above_ms)
        self._cumulative: OrderedDict[tuple, tuple[int, float]] = OrderedDict()
        self._gauges: dict[tuple[str, str], tuple[float, float]] = {}
        self._delivery_age: float | None = None
        self._open: OrderedDict[str, OpenStart] = OrderedDict()
        self._started_ops: OrderedDict[str, None] = OrderedDict()  # operations seen started, least recent first
        # key -> (the outcome's event timestamp, engine time): outcomes of operations seen started
        self._finished: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._finished_new: dict[str, tuple[str, float]] = {}
        self._recent_finished: OrderedDict[str, str] = OrderedDict()  # key -> event timestamp: the other outcomes
        self._forgotten: dict[str, int] = {}  # eviction reason -> count, reported at evaluation
        self._added: dict[str, OpenStart] = {}
        self._removed: set[str] = set()
        for start in store.load_open_starts():
            self._open[start.key] = start
            self._seen_started(start.operation)
        for key, event_ts, at in store.load_finished(self._started_at - FINISHED_KEEP_S, self._max_finished):
            self._finished[key] = (event_ts, at)
            self._seen_started(key.partition("\x00")[0])
        self._instances: dict[tuple[str, str], InstanceRow] = {
            (row.rule, row.subject): row for row in store.load_instances() if row.rule in {r.name for r in self.rules}
        }

    # -- ingest -----------------------------------------------------------------------------------

    def observe_events(self, events: Iterable[Mapping[str, Any]]) -> None:
        now = self._clock()
        with self._lock:
            tallies: dict[str, _Tally] = {}
            for event in events:
                name = event.get("event")
                if not isinstance(name, str):
                    continue
                if name.endswith("_started"):
                    self._start(now, name[:-8], event)
                elif name.endswith("_completed"):
                    self._outcome(now, name[:-10], event, tallies, failed=False)
                elif name.endswith("_failed"):
                    self._outcome(now, name[:-7], event, tallies, failed=True)
            # the windows are read only at evaluation, under the lock: one add per count, not per event
            for tally in tallies.values():
                if tally.counts is not None:
                    for count_name, amount in tally.added.items():
                        tally.counts.add(now, count_name, amount)
                if isinstance(tally.latency, LatencyWindow):
                    for latency_bin, amount in tally.bins.items():
                        tally.latency.add_to_bin(now, latency_bin, amount)

    @staticmethod
    def _key(operation: str, properties: Mapping[str, Any]) -> str | None:
        job_id = properties.get(JOB_ID)
        if job_id not in (None, ""):
            return f"{operation}\x00job\x00{job_id}"
        trace_id, span_id = properties.get("trace_id"), properties.get("span_id")
        if trace_id and span_id:
            return f"{operation}\x00span\x00{trace_id}:{span_id}"
        return None

    def _start(self, now: float, operation: str, event: Mapping[str, Any]) -> None:
        properties = event.get("properties") or {}
        key = self._key(operation, properties)
        if key is None or not operation:
            return
        self._seen_started(operation)
        timestamp = event.get("timestamp")
        timestamp = timestamp if isinstance(timestamp, str) else None
        remembered = self._finished.get(key)
        finished_at = remembered[0] if remembered is not None else self._recent_finished.get(key)
        if finished_at is not None and (timestamp is None or timestamp <= finished_at):
            return  # its outcome arrived first (spans and event records travel in separate batches)
        start = OpenStart(key, operation, now, properties.get("trace_id"), properties.get("span_id"), timestamp)
        self._open.pop(key, None)
        self._open[key] = start
        self._added[key] = start
        self._removed.discard(key)
        if len(self._open) > self._max_open_starts:
            evicted, _ = self._open.popitem(last=False)
            self._added.pop(evicted, None)
            self._removed.add(evicted)
            self._on_drop("evicted", 1)

    def _seen_started(self, operation: str) -> None:
        started = self._started_ops
        if operation in started:
            started.move_to_end(operation)
            return
        started[operation] = None
        if len(started) > self._max_series:
            started.popitem(last=False)
            self._forget("operation_evicted")

    def _forget(self, reason: str, count: int = 1) -> None:
        self._forgotten[reason] = self._forgotten.get(reason, 0) + count

    def _series(self, table: dict, key: str, factory: Callable[[], Any]) -> Any:
        series = table.get(key)
        if series is None:
            if len(table) >= self._max_series:
                self._on_drop("series_limit", 1)
                return None
            series = table[key] = factory()
        return series

    def _outcome(
        self, now: float, operation: str, event: Mapping[str, Any], tallies: dict[str, _Tally], *, failed: bool
    ) -> None:
        if not operation:
            return
        properties = event.get("properties") or {}
        tally = tallies.get(operation)
        if tally is None:
            counts = self._series(self._outcomes, operation, lambda: CountWindow(self._bucket_s, self._horizon_s))
            threshold = min(
                self._slow_threshold.get(operation, float("inf")), self._slow_threshold.get(ALL, float("inf"))
            )
            tally = tallies[operation] = _Tally(counts, threshold)
        elif tally.counts is None:
            self._on_drop("series_limit", 1)
        if tally.counts is None:
            return
        added = tally.added
        outcome = "failed" if failed else "completed"
        added[outcome] = added.get(outcome, 0.0) + 1.0
        trace_id = properties.get("trace_id")
        if failed:
            error_type = properties.get("error_type")
            if self._ignored_types and (
                error_type in self._ignored_types.get(operation, ()) or error_type in self._ignored_types.get(ALL, ())
            ):
                ignored = f"failed:{error_type}"  # bounded: only the configured types
                added[ignored] = added.get(ignored, 0.0) + 1.0
            elif isinstance(trace_id, str):
                self._failed_examples.setdefault(operation, deque(maxlen=MAX_EXAMPLES)).append((now, trace_id))
        duration_ms = properties.get("processing_time_ms")
        if isinstance(duration_ms, (int, float)) and not isinstance(duration_ms, bool):
            if tally.latency is None:
                self._on_drop("series_limit", 1)
            else:
                if tally.latency is _UNRESOLVED:
                    tally.latency = self._series(
                        self._latency, operation, lambda: LatencyWindow(self._bucket_s, self._horizon_s)
                    )
                if tally.latency is not None:
                    bins = tally.bins
                    index = latency_bin(float(duration_ms))
                    bins[index] = bins.get(index, 0.0) + 1.0
            if duration_ms > tally.slow_threshold and isinstance(trace_id, str):
                examples = self._slow_examples.setdefault(operation, deque(maxlen=MAX_EXAMPLES))
                examples.append((now, trace_id, float(duration_ms)))
        key = self._key(operation, properties)
        if key is not None:
            if self._open.pop(key, None) is not None:
                self._added.pop(key, None)
                self._removed.add(key)
            timestamp = event.get("timestamp")
            event_ts = timestamp if isinstance(timestamp, str) else ""
            # a key is in one of the two tables at most: the one its operation's latest outcome chose
            if operation in self._started_ops:
                self._recent_finished.pop(key, None)
                finished, new = self._finished, self._finished_new
                finished.pop(key, None)  # a repeated outcome counts as the newest
                new.pop(key, None)
                finished[key] = new[key] = (event_ts, now)
                if len(finished) > self._max_finished:
                    forgotten, _ = finished.popitem(last=False)
                    self._finished_new.pop(forgotten, None)
                    self._forget("finished_evicted")
            else:
                if self._finished.pop(key, None) is not None:
                    self._finished_new.pop(key, None)
                recent = self._recent_finished
                recent.pop(key, None)  # a repeated outcome counts as the newest
                recent[key] = event_ts
                if len(recent) > self._max_recent_finished:
                    recent.popitem(last=False)
                    self._forget("recent_evicted")

    def observe_metrics(self, request: ExportMetricsServiceRequest) -> None:
        """An ``ExportMetricsServiceRequest``: HTTP server request counts by route, and the job gauges."""
        now = self._clock()
        with self._lock:
            for resource_metrics in request.resource_metrics:
                resource_key: tuple | None = None
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        if metric.name == HTTP_DURATION and metric.HasField("histogram"):
                            if resource_key is None:
                                resource_key = _attributes_key(resource_metrics.resource.attributes)
                            self._http_points(now, resource_key, metric.histogram)
                        elif metric.name in GAUGES and metric.HasField("gauge"):
                            for point in metric.gauge.data_points:
                                job_kind = ""
                                for kv in point.attributes:
                                    if kv.key == JOB_KIND:
                                        job_kind = str(_any_value(kv.value))
                                number = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
                                self._gauges[(metric.name, job_kind)] = (float(number), now)

    def _http_points(self, now: float, resource_key: tuple, histogram: Any) -> None:
        cumulative = histogram.aggregation_temporality == _CUMULATIVE
        for point in histogram.data_points:
            attributes = {kv.key: _any_value(kv.value) for kv in point.attributes}
            count = float(point.count)
            if cumulative:
                key = (resource_key, tuple(sorted((k, repr(v)) for k, v in attributes.items())))
                previous = self._cumulative.pop(key, None)
                self._cumulative[key] = (point.start_time_unix_nano, count)
                if len(self._cumulative) > 10 * self._max_series:
                    self._cumulative.popitem(last=False)
                if previous is None:
                    # a series first seen: count it whole only if it began after this engine did, else it
                    # is a baseline (a collector restart must not replay a service's whole history)
                    delta = count if point.start_time_unix_nano / 1e9 >= self._started_at - self._bucket_s else 0.0
                elif point.start_time_unix_nano != previous[0] or count < previous[1]:
                    delta = count  # the service restarted: its counts start from zero again
                else:
                    delta = count - previous[1]
            else:
                delta = count
            if delta <= 0:
                continue
            route = attributes.get("http.route")
            route = route if isinstance(route, str) and route else _NO_ROUTE
            window = self._series(self._http, route, lambda: CountWindow(self._bucket_s, self._horizon_s))
            if window is None:
                continue
            window.add(now, "all", delta)
            try:
                status = int(attributes.get("http.response.status_code") or 0)
            except (TypeError, ValueError):
                status = 0
            if 500 <= status <= 599:
                window.add(now, "5xx", delta)
                for exemplar in point.exemplars:
                    if len(exemplar.trace_id) == 16:
                        examples = self._http_examples.setdefault(route, deque(maxlen=MAX_EXAMPLES))
                        examples.append((now, exemplar.trace_id.hex()))

    def observe_delivery(self, oldest_undelivered_age_s: float | None) -> None:
        with self._lock:
            self._delivery_age = oldest_undelivered_age_s

    def gauges(self) -> dict[str, dict[str, float]]:
        """The last values of the job-queue gauges received: ``{name: {job kind: value}}``."""
        with self._lock:
            result: dict[str, dict[str, float]] = {}
            for (name, job_kind), (value, _) in self._gauges.items():
                result.setdefault(name, {})[job_kind] = value
            return result

    def open_starts(self) -> int:
        with self._lock:
            return len(self._open)

    # -- evaluation -------------------------------------------------------------------------------

    def evaluate(self, now: float | None = None) -> list[Transition]:
        """Evaluate every rule once; persist state changes and queue their notifications."""
        with self._lock:
            now = self._clock() if now is None else now
            expired = self._expire_open_starts(now)
            self._expire_finished(now)
            figures = {rule.name: self._figures(rule, now) for rule in self.rules}
            instances = dict(self._instances)
            transitions: list[Transition] = []
            changed: dict[tuple[str, str], InstanceRow | None] = {}
            for rule in self.rules:
                rule_figures = figures[rule.name]
                subjects = set(rule_figures) | {subject for (name, subject) in instances if name == rule.name}
                for subject in sorted(subjects):
                    figure = rule_figures.get(subject) or _Figure(False, None, "no data", ())
                    key = (rule.name, subject)
                    old = instances.get(key)
                    new, transition = self._step(rule, subject, old, figure, now)
                    if new is not old:
                        changed[key] = new
                        if new is None:
                            instances.pop(key, None)
                        else:
                            instances[key] = new
                    if transition is not None:
                        transitions.append(transition)
            with self.store.transaction() as db:
                for (name, subject), row in changed.items():
                    if row is None:
                        self.store.delete_instance(db, name, subject)
                    else:
                        self.store.save_instance(db, row)
                for transition in transitions:
                    if not transition.repeat:
                        self.store.add_history(db, now, transition.snapshot)
                    for notifier in self.notifiers:
                        self.store.enqueue_notification(db, notifier, transition.snapshot, now)
                self._write_deltas(db, now)
            self._instances = instances
            forgotten = self._deltas_written()
        if expired:
            self._on_drop("expired", expired)
        for reason, count in forgotten.items():
            self._on_drop(reason, count)
        return transitions

    def flush(self) -> None:
        """Write the open-start and finished deltas now (shutdown)."""
        with self._lock:
            now = self._clock()
            self._expire_finished(now)
            with self.store.transaction() as db:
                self._write_deltas(db, now)
            forgotten = self._deltas_written()
        for reason, count in forgotten.items():
            self._on_drop(reason, count)

    def _write_deltas(self, db: sqlite3.Connection, now: float) -> None:
        """The open starts and remembered outcomes added or removed since the last write (lock held)."""
        self.store.apply_open_starts(db, self._added.values(), self._removed)
        self.store.apply_finished(db, self._finished_new, now - FINISHED_KEEP_S, self._max_finished)

    def _deltas_written(self) -> dict[str, int]:
        """After the deltas' commit: start the next ones; returns the evictions to report (lock held)."""
        self._added.clear()
        self._removed.clear()
        self._finished_new.clear()
        forgotten, self._forgotten = self._forgotten, {}
        return forgotten

    def _expire_open_starts(self, now: float) -> int:
        expired = 0
        cutoff = now - self._open_start_ttl_s
        while self._open:
            key, start = next(iter(self._open.items()))
            if start.started_at > cutoff:
                break
            self._open.popitem(last=False)
            self._added.pop(key, None)
            self._removed.add(key)
            expired += 1
        return expired

    def _expire_finished(self, now: float) -> None:
        """Forget the outcomes of operations seen started recorded more than FINISHED_KEEP_S ago (not a
        loss: no start is expected that late)."""
        cutoff = now - FINISHED_KEEP_S
        finished = self._finished
        while finished:
            key, (_, at) = next(iter(finished.items()))
            if at >= cutoff:
                break
            finished.popitem(last=False)
            self._finished_new.pop(key, None)

    def _step(
        self, rule: Rule, subject: str, old: InstanceRow | None, figure: _Figure, now: float
    ) -> tuple[InstanceRow | None, Transition | None]:
        if figure.active:
            if old is None or old.state == "pending":
                active_since = now if old is None else old.active_since
                if now - active_since >= rule.for_s:
                    row = InstanceRow(
                        rule.name, subject, "firing", active_since, active_since, figure.value, figure.trace_ids, now
                    )
                    row.snapshot = self._snapshot(rule, subject, row, figure, "firing", None)
                    return row, Transition(rule.name, subject, "firing", row.snapshot)
                if old is None:
                    return InstanceRow(rule.name, subject, "pending", now, None, figure.value, figure.trace_ids), None
                return old, None
            row = replace(old, value=figure.value, trace_ids=figure.trace_ids or old.trace_ids, clear_since=None)
            row.snapshot = self._snapshot(rule, subject, row, figure, "firing", None)
            due = rule.repeat_interval_s > 0 and now - (old.last_notified_at or 0.0) >= rule.repeat_interval_s
            if due:
                row.last_notified_at = now
                return row, Transition(rule.name, subject, "firing", row.snapshot, repeat=True)
            return row, None
        if old is None:
            return None, None
        if old.state == "pending":
            return None, None
        clear_since = old.clear_since if old.clear_since is not None else now
        warm = not rule.window_s or now - self._started_at >= rule.window_s
        if now - clear_since >= rule.keep_firing_for_s and warm:
            snapshot = self._snapshot(rule, subject, old, figure, "resolved", now)
            return None, Transition(rule.name, subject, "resolved", snapshot)
        if clear_since == old.clear_since:
            return old, None
        return replace(old, clear_since=clear_since), None

    def _labels(self, rule: Rule, subject: str) -> dict[str, str]:
        labels = {"alertname": rule.name, "severity": rule.severity}
        if rule.subject_label is not None:
            labels[rule.subject_label] = subject
        labels.update(dict(rule.labels))
        return labels

    def _snapshot(
        self, rule: Rule, subject: str, row: InstanceRow, figure: _Figure, status: str, ends_at: float | None
    ) -> dict[str, Any]:
        labels = self._labels(rule, subject)
        trace_ids = list(row.trace_ids if status == "resolved" else (figure.trace_ids or row.trace_ids))
        value = row.value if status == "resolved" else figure.value
        where = f" ({rule.subject_label} {subject})" if rule.subject_label else ""
        if status == "firing":
            summary = f"{rule.name}{where}: {figure.text}"
        else:
            summary = f"{rule.name}{where} resolved: now {figure.text}"
        return {
            "alertname": rule.name,
            "severity": rule.severity,
            "kind": rule.when,
            "subject_label": rule.subject_label,
            "subject": subject,
            "status": status,
            "value": value,
            "value_text": _value_text(rule, value),
            "summary": summary,
            "condition": rule.condition(),
            "trace_ids": trace_ids[:MAX_EXAMPLES],
            "links": {
                name: [fill_link(template, t) for t in trace_ids[:MAX_EXAMPLES]] for name, template in rule.links
            },
            "labels": labels,
            "starts_at": row.starts_at if row.starts_at is not None else row.active_since,
            "ends_at": ends_at,
            "fingerprint": fingerprint(labels),
            "generator_url": self._generator_url,
        }

    # -- rule kinds -------------------------------------------------------------------------------

    def _subjects(self, pattern: str | None, table: Mapping[str, Any]) -> list[str]:
        if pattern == ALL:
            return list(table)
        return [pattern] if pattern is not None and pattern in table else []

    def _figures(self, rule: Rule, now: float) -> dict[str, _Figure]:
        result: dict[str, _Figure] = {}
        if rule.when == "failure_rate":
            for operation in self._subjects(rule.operation, self._outcomes):
                totals = self._outcomes[operation].totals(now, rule.window_s)
                ignored = sum(totals.get(f"failed:{error_type}", 0.0) for error_type in rule.ignore_error_types)
                failed = totals.get("failed", 0.0) - ignored
                total = failed + totals.get("completed", 0.0)
                rate = failed / total if total else None
                active = rate is not None and total >= rule.min_count and rate > rule.above
                text = (
                    f"{failed:.0f} of {total:.0f} outcomes failed in the last {rule.window_s:g} s"
                    f" ({_share(rate)}; alert above {_share(rule.above)}, at least {rule.min_count})"
                )
                examples = self._recent(self._failed_examples.get(operation), now - rule.window_s)
                result[operation] = _Figure(active, rate, text, examples)
        elif rule.when == "http_error_rate":
            route_pattern = rule.route or ALL
            grouped = route_pattern != ALL and route_pattern.endswith(ALL)
            subjects = [route_pattern] if grouped else self._subjects(route_pattern, self._http)
            for route in subjects:
                if grouped:
                    prefix = route_pattern[:-1]
                    totals = {}
                    for name, window in self._http.items():
                        if name.startswith(prefix):
                            for counter, amount in window.totals(now, rule.window_s).items():
                                totals[counter] = totals.get(counter, 0.0) + amount
                    examples = tuple(
                        trace_id
                        for name, found in self._http_examples.items()
                        if name.startswith(prefix)
                        for at, trace_id in found
                        if at >= now - rule.window_s
                    )[:MAX_EXAMPLES]
                else:
                    totals = self._http[route].totals(now, rule.window_s)
                    examples = self._recent(self._http_examples.get(route), now - rule.window_s)
                errors, total = totals.get("5xx", 0.0), totals.get("all", 0.0)
                rate = errors / total if total else None
                active = rate is not None and total >= rule.min_count and rate > rule.above
                text = (
                    f"{errors:.0f} of {total:.0f} requests answered 5xx in the last {rule.window_s:g} s"
                    f" ({_share(rate)}; alert above {_share(rule.above)}, at least {rule.min_count})"
                )
                result[route] = _Figure(active, rate, text, examples)
        elif rule.when == "latency_p95":
            for operation in self._subjects(rule.operation, self._latency):
                p95, count = self._latency[operation].quantile(now, rule.window_s, 0.95)
                active = p95 is not None and count >= rule.min_count and p95 > rule.above_ms
                shown = "n/a" if p95 is None else f"{p95:.0f} ms"
                text = (
                    f"p95 processing time {shown} over {count} outcomes in the last {rule.window_s:g} s"
                    f" (alert above {rule.above_ms:g} ms, at least {rule.min_count})"
                )
                slow = self._slow_examples.get(operation) or ()
                examples = tuple(t for at, t, ms in reversed(slow) if at >= now - rule.window_s and ms > rule.above_ms)
                result[operation] = _Figure(active, p95, text, examples[:MAX_EXAMPLES])
        elif rule.when == "stalled":
            stalled: dict[str, list[OpenStart]] = {}
            cutoff = now - rule.after_s
            for start in self._open.values():
                if start.started_at > cutoff:
                    break
                if rule.operation in (ALL, start.operation):
                    stalled.setdefault(start.operation, []).append(start)
            for operation, starts in stalled.items():
                count = len(starts)
                text = f"{count} started more than {rule.after_s:g} s ago with no outcome yet"
                examples = tuple(s.trace_id for s in starts if s.trace_id)[:MAX_EXAMPLES]
                result[operation] = _Figure(count > rule.above, float(count), text, examples)
        elif rule.when == "queue_age":
            ages = {kind: figure for (name, kind), figure in self._gauges.items() if name == QUEUE_AGE}
            for kind in self._subjects(rule.operation, ages):
                queued_s, at = ages[kind]
                fresh = now - at <= STALE_GAUGE_S
                active = fresh and queued_s > rule.above_s
                state = "" if fresh else f", last reported {now - at:.0f} s ago: not trusted"
                text = f"the oldest queued job has waited {queued_s:.0f} s (alert above {rule.above_s:g} s{state})"
                result[kind] = _Figure(active, queued_s, text, ())
        elif rule.when == "delivery_backlog":
            age = self._delivery_age
            active = age is not None and age > rule.above_s
            shown = "none waiting" if age is None else f"{age:.0f} s"
            text = f"oldest undelivered analytics event: {shown} (alert above {rule.above_s:g} s)"
            result[""] = _Figure(active, age, text, ())
        return result

    @staticmethod
    def _recent(examples: Iterable[tuple[float, str]] | None, since: float) -> tuple[str, ...]:
        if not examples:
            return ()
        return tuple(trace_id for at, trace_id in reversed(list(examples)) if at >= since)[:MAX_EXAMPLES]

    # -- reading ----------------------------------------------------------------------------------

    def firing(self) -> list[dict[str, Any]]:
        """Snapshots of the firing instances (for the CLI and the Alertmanager re-push)."""
        with self._lock:
            return [dict(row.snapshot) for row in self._instances.values() if row.state == "firing" and row.snapshot]

    def pending(self) -> list[tuple[str, str, float]]:
        """(rule, subject, active since) of the instances waiting out their ``for_s``."""
        with self._lock:
            return [(r.rule, r.subject, r.active_since) for r in self._instances.values() if r.state == "pending"]

    def history(self, limit: int = 100, *, after_id: int = 0) -> list[dict[str, Any]]:
        return self.store.history(limit, after_id=after_id)

    def metrics_samples(self) -> list[tuple[str, str, float]]:
        """(alertname, severity, firing instances) per rule, zeros included, for ``alerts_firing``."""
        with self._lock:
            counts = {rule.name: 0 for rule in self.rules}
            for row in self._instances.values():
                if row.state == "firing" and row.rule in counts:
                    counts[row.rule] += 1
            return [(rule.name, rule.severity, float(counts[rule.name])) for rule in self.rules]


def _share(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.1f} %"


def _value_text(rule: Rule, value: float | None) -> str:
    if value is None:
        return "n/a"
    if rule.when in ("failure_rate", "http_error_rate"):
        return _share(value)
    if rule.when == "latency_p95":
        return f"{value:.0f} ms"
    if rule.when == "stalled":
        return f"{value:.0f} stalled"
    if rule.when == "queue_age":
        return f"{value:.0f} s waiting"
    return f"{value:.0f} s"


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def _attributes_key(attributes: Iterable[Any]) -> tuple:
    return tuple(sorted((kv.key, repr(_any_value(kv.value))) for kv in attributes))
