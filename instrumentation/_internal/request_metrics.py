"""``http.server.request.duration`` aggregated on the request thread, exported as an ordinary SDK histogram.

The SDK's ``Histogram.record`` builds a measurement, hashes its attribute set, runs the exemplar
filter and takes several locks on every call. The server-span layer records one point per request, so
``RequestDurations`` aggregates in plain Python instead: a tuple key, a bisect into the bucket counts,
one lock. ``attach`` hooks it into a MeterProvider's collection: whatever a metric reader collects
(the periodic OTLP export, an in-memory reader) gets the histogram in the scope the aggregator was
made for, with the reader's temporality for histograms, as if the SDK had aggregated it.

As the SDK does: a series starts when its first point is recorded (the collector's ``http_error_rate``
rule takes a cumulative series that began before the collector did as a baseline, so a process-wide
start time would hide the first errors of a route after a collector restart); durations that are
negative or not finite are dropped; past ``max_series`` attribute sets, points go to one overflow
series ``otel.metric.overflow=true`` (counted in ``pipeline_stats()`` as ``request_metric_overflows``).
Exemplars (the last sampled point of each bucket since the reader's previous collection, sampled by
the provider's exemplar filter) are kept for 5xx points only: the collector links an error-rate alert
to its traces through them, and looking up the current span on every request would cost more than the
rest of ``record``.

Importing this module loads no OpenTelemetry SDK; ``attach`` and the collection do.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Sequence
from time import time_ns
from typing import TYPE_CHECKING, Any, cast

from opentelemetry import context as otel_context
from opentelemetry import trace

from instrumentation import semconv
from instrumentation._internal.guard import report
from instrumentation._internal.stats import STATS

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import Metric, MetricReader, MetricsData
    from opentelemetry.sdk.resources import Resource

__all__ = [
    "MAX_SERIES",
    "OVERFLOW_ATTRIBUTES",
    "REQUEST_DURATION",
    "REQUEST_DURATION_BUCKETS_S",
    "RequestDurations",
    "attach",
]

REQUEST_DURATION = "http.server.request.duration"
REQUEST_DURATION_UNIT = "s"
REQUEST_DURATION_DESCRIPTION = "Duration of HTTP server requests."
REQUEST_DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
"""The bucket boundaries OTel's HTTP semantic conventions advise for ``http.server.request.duration``."""
MAX_SERIES = 1000
"""Attribute sets aggregated over the process's life; later new ones share the overflow series."""
OVERFLOW_ATTRIBUTES: dict[str, Any] = {"otel.metric.overflow": True}
OVERFLOW_STAT = "request_metric_overflows"

Key = tuple[Any, ...]
"""``(method, status, route, error type)``, or ``_OVERFLOW_KEY``."""
_OVERFLOW_KEY: Key = ("otel.metric.overflow",)
_INF = math.inf
_Sample = tuple[float, int, int | None, int | None, Key]
"""An exemplar as recorded: value, time, span id, trace id, the key it was recorded under."""


class _Series:
    """One attribute set's bucket counts, sum, min, max and exemplars (by bucket index)."""

    __slots__ = ("buckets", "exemplars", "max", "min", "sum")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * size
        self.sum = 0.0
        self.min = _INF
        self.max = -_INF
        self.exemplars: dict[int, _Sample] | None = None

    def add(self, other: _Series) -> None:
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        if other.exemplars:
            if self.exemplars is None:
                self.exemplars = {}
            self.exemplars.update(other.exemplars)


def _add_into(target: dict[Key, _Series], key: Key, series: _Series) -> None:
    existing = target.get(key)
    if existing is None:
        existing = target[key] = _Series(len(series.buckets))
    existing.add(series)


class _ReaderState:
    """What one metric reader has not collected yet, and when it last collected."""

    __slots__ = ("collected_ns", "pending")

    def __init__(self) -> None:
        self.pending: dict[Key, _Series] = {}
        self.collected_ns: int | None = None


def _attributes(key: Key) -> dict[str, Any]:
    if key == _OVERFLOW_KEY:
        return dict(OVERFLOW_ATTRIBUTES)
    method, status, route, error_type = key
    attributes: dict[str, Any] = {semconv.HTTP_REQUEST_METHOD: method, semconv.HTTP_RESPONSE_STATUS_CODE: status}
    if route is not None:
        attributes[semconv.HTTP_ROUTE] = route
    if error_type is not None:
        attributes[semconv.ERROR_TYPE] = error_type
    return attributes


class RequestDurations:
    """The ``http.server.request.duration`` histogram of one process, aggregated in plain Python.

    ``record`` may be called from any thread. Points recorded go to the live interval; a collection
    (any reader's) takes it whole under the lock and adds it to the totals (what CUMULATIVE readers
    get) and to every known reader's pending interval (what a DELTA reader gets, and the exemplars
    either kind gets). Unattached, it aggregates up to ``max_series`` series and is never read.
    """

    __slots__ = (
        "__weakref__",
        "_collect_lock",
        "_exemplar_filter",
        "_live",
        "_lock",
        "_readers",
        "_series",
        "_totals",
        "bounds",
        "max_series",
        "scope_name",
    )

    def __init__(
        self, scope_name: str, bounds: Sequence[float] = REQUEST_DURATION_BUCKETS_S, max_series: int = MAX_SERIES
    ) -> None:
        self.scope_name = scope_name
        self.bounds = tuple(bounds)
        self.max_series = max_series
        self._lock = threading.Lock()
        """Held by ``record`` around the live interval, and to swap the live interval out."""
        self._collect_lock = threading.Lock()
        """Held by a collection: the totals and the readers' states."""
        self._live: dict[Key, _Series] = {}
        self._series: dict[Key, tuple[int, dict[str, Any]]] = {}
        """Every attribute set ever admitted (overflow included): its start time and attributes. Only
        added to, under ``_lock``; a collection reads the entries of the series it took."""
        self._totals: dict[Key, _Series] = {}
        self._readers: weakref.WeakKeyDictionary[Any, _ReaderState] = weakref.WeakKeyDictionary()
        self._exemplar_filter: Any = None
        _ALL.add(self)

    def record(self, method: str, status: int, route: str | None, error_type: str | None, duration_s: float) -> None:
        """One request: its method (already ``_OTHER`` if unknown), status, route template, error type."""
        if not 0.0 <= duration_s < _INF:
            return
        key = (method, status, route, error_type)
        index = bisect_left(self.bounds, duration_s)
        sample = self._sample(key, duration_s) if status >= 500 and self._exemplar_filter is not None else None
        with self._lock:
            series = self._live.get(key)
            if series is None:
                series = self._open(key)
            series.buckets[index] += 1
            series.sum += duration_s
            if duration_s < series.min:
                series.min = duration_s
            if duration_s > series.max:
                series.max = duration_s
            if sample is not None:
                if series.exemplars is None:
                    series.exemplars = {}
                series.exemplars[index] = sample

    def _open(self, key: Key) -> _Series:
        """The live series of a key not in the live interval yet; called with ``_lock`` held."""
        known = self._series
        if key not in known:
            if len(known) >= self.max_series:
                STATS.increment(OVERFLOW_STAT)
                key = _OVERFLOW_KEY
                series = self._live.get(key)
                if series is not None:
                    return series
            if key not in known:
                known[key] = (time_ns(), _attributes(key))
        series = self._live[key] = _Series(len(self.bounds) + 1)
        return series

    def _sample(self, key: Key, value: float) -> _Sample | None:
        """An exemplar of this point, if the provider's exemplar filter takes it (the SDK's rule)."""
        now = time_ns()
        current = otel_context.get_current()
        if not self._exemplar_filter.should_sample(value, now, None, current):
            return None
        span_context = trace.get_current_span(current).get_span_context()
        if not span_context.is_valid:
            return (value, now, None, None, key)
        return (value, now, span_context.span_id, span_context.trace_id, key)

    def _know_reader(self, reader: Any) -> None:
        with self._collect_lock:
            if reader not in self._readers:
                self._readers[reader] = _ReaderState()

    def collect(self, reader: Any, histogram_temporality: Any) -> Metric | None:
        """The histogram for ``reader`` as of now (None without any point to report)."""
        from opentelemetry.sdk.metrics import Exemplar
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            Histogram,
            HistogramDataPoint,
            Metric,
        )

        now = time_ns()
        with self._collect_lock:
            with self._lock:
                live, self._live = self._live, {}
            state = self._readers.get(reader)
            if state is None:
                state = self._readers[reader] = _ReaderState()
            for key, series in live.items():
                _add_into(self._totals, key, series)
                for each in self._readers.values():
                    _add_into(each.pending, key, series)
            pending, state.pending = state.pending, {}
            previous_ns, state.collected_ns = state.collected_ns, now
            delta = histogram_temporality == AggregationTemporality.DELTA
            points = []
            for key, series in (pending if delta else self._totals).items():
                start_ns, attributes = self._series[key]
                interval = pending.get(key)
                exemplars = []
                if interval is not None and interval.exemplars:
                    for _, (value, at_ns, span_id, trace_id, offered) in sorted(interval.exemplars.items()):
                        filtered = {} if offered == key else _attributes(offered)
                        exemplars.append(Exemplar(filtered, value, at_ns, span_id, trace_id))
                points.append(
                    HistogramDataPoint(
                        attributes=attributes,
                        start_time_unix_nano=previous_ns if delta and previous_ns is not None else start_ns,
                        time_unix_nano=now,
                        count=sum(series.buckets),
                        sum=series.sum,
                        bucket_counts=tuple(series.buckets),
                        explicit_bounds=self.bounds,
                        min=series.min,
                        max=series.max,
                        exemplars=exemplars,
                    )
                )
        if not points:
            return None
        return Metric(
            name=REQUEST_DURATION,
            description=REQUEST_DURATION_DESCRIPTION,
            unit=REQUEST_DURATION_UNIT,
            data=Histogram(data_points=points, aggregation_temporality=histogram_temporality),
        )

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._collect_lock = threading.Lock()


_ALL: weakref.WeakSet[RequestDurations] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for durations in list(_ALL):
        durations._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _merged(data: MetricsData | None, metric: Metric, scope_name: str, resource: Resource) -> MetricsData:
    """``data`` with ``metric`` in its ScopeMetrics of ``scope_name`` (added when absent)."""
    from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    ours = ScopeMetrics(scope=InstrumentationScope(scope_name), metrics=[metric], schema_url="")
    if data is None or not data.resource_metrics:
        return MetricsData(
            resource_metrics=[ResourceMetrics(resource=resource, scope_metrics=[ours], schema_url=resource.schema_url)]
        )
    first, *others = data.resource_metrics
    scopes = list(first.scope_metrics)
    for index, scope_metrics in enumerate(scopes):
        if scope_metrics.scope.name == scope_name:
            scopes[index] = ScopeMetrics(
                scope=scope_metrics.scope, metrics=[*scope_metrics.metrics, metric], schema_url=scope_metrics.schema_url
            )
            break
    else:
        scopes.append(ours)
    return MetricsData(
        resource_metrics=[
            ResourceMetrics(resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url),
            *others,
        ]
    )


class _CollectWithRequestDurations:
    """A MeterProvider's collect (what every reader calls), with the request durations added."""

    def __init__(
        self, collect: Callable[..., MetricsData | None], durations: RequestDurations, sdk_config: Any
    ) -> None:
        self.wrapped = collect
        self.durations = durations
        self._sdk_config = sdk_config

    def __call__(self, metric_reader: MetricReader, timeout_millis: float = 10_000) -> MetricsData | None:
        from opentelemetry.sdk.metrics._internal.instrument import _Histogram
        from opentelemetry.sdk.metrics.export import AggregationTemporality

        data = self.wrapped(metric_reader, timeout_millis=timeout_millis)
        try:
            temporality = metric_reader._instrument_class_temporality.get(_Histogram, AggregationTemporality.CUMULATIVE)
            metric = self.durations.collect(metric_reader, temporality)
            if metric is None:
                return data
            return _merged(data, metric, self.durations.scope_name, self._sdk_config.resource)
        except Exception as exc:
            report(exc)
            return data


def attach(meter_provider: Any, durations: RequestDurations) -> bool:
    """Have every metric reader of ``meter_provider`` (an SDK MeterProvider; also readers added later)
    receive ``durations`` as the histogram ``http.server.request.duration``, and sample its exemplars
    with the provider's exemplar filter. False, and nothing done, for another kind of provider or one
    that already has an aggregator attached (attaching the same one again changes nothing)."""
    from opentelemetry.sdk.metrics import MeterProvider

    if not isinstance(meter_provider, MeterProvider):
        return False
    provider: MeterProvider = meter_provider
    consumer = provider._measurement_consumer
    installed = vars(consumer).get("collect")
    if isinstance(installed, _CollectWithRequestDurations):
        return installed.durations is durations
    collect = _CollectWithRequestDurations(consumer.collect, durations, provider._sdk_config)
    durations._exemplar_filter = provider._sdk_config.exemplar_filter
    setattr(consumer, "collect", collect)  # noqa: B010  MeterProvider.add_metric_reader hands this to new readers
    for reader in list(consumer._reader_storages):
        durations._know_reader(reader)
        reader._set_collect_callback(cast(Any, collect))  # the SDK calls it with timeout_millis too
    return True
