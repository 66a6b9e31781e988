"""RequestDurations: the same histogram the SDK's own would export, through real readers and exporters."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics import AlwaysOnExemplarFilter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from instrumentation import semconv
from instrumentation._internal.request_metrics import (
    OVERFLOW_STAT,
    REQUEST_DURATION,
    REQUEST_DURATION_BUCKETS_S,
    RequestDurations,
    attach,
)
from instrumentation._internal.stats import STATS

SCOPE = "phonoglyph.instrumentation"
RESOURCE = Resource.create({"service.name": "api"})
DELTA = {Histogram: AggregationTemporality.DELTA}

Point = tuple[str, int, str | None, str | None, float]


def attributes(method: str, status: int, route: str | None, error_type: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {semconv.HTTP_REQUEST_METHOD: method, semconv.HTTP_RESPONSE_STATUS_CODE: status}
    if route is not None:
        result[semconv.HTTP_ROUTE] = route
    if error_type is not None:
        result[semconv.ERROR_TYPE] = error_type
    return result


def points_of(data: MetricsData | None, scope: str = SCOPE) -> dict[frozenset, HistogramDataPoint]:
    """The ``http.server.request.duration`` points of ``scope``, by attribute set."""
    found: dict[frozenset, HistogramDataPoint] = {}
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == REQUEST_DURATION and scope_metrics.scope.name == scope:
                    for point in metric.data.data_points:
                        assert isinstance(point, HistogramDataPoint)
                        found[frozenset((point.attributes or {}).items())] = point
    return found


def temporality_of(data: MetricsData | None) -> AggregationTemporality:
    assert data is not None
    [metric] = [
        m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics if m.name == REQUEST_DURATION
    ]
    return metric.data.aggregation_temporality


class Pair:
    """Our aggregator and the SDK's own histogram, each on its own provider with an in-memory reader."""

    def __init__(self, delta: bool = False, max_series: int = 1000) -> None:
        preferred = DELTA if delta else None
        self.sdk_reader = InMemoryMetricReader(preferred_temporality=preferred)
        self.sdk_provider = MeterProvider(metric_readers=[self.sdk_reader], resource=RESOURCE, shutdown_on_exit=False)
        self.histogram = self.sdk_provider.get_meter(SCOPE).create_histogram(
            REQUEST_DURATION, unit="s", explicit_bucket_boundaries_advisory=list(REQUEST_DURATION_BUCKETS_S)
        )
        self.reader = InMemoryMetricReader(preferred_temporality=preferred)
        self.provider = MeterProvider(metric_readers=[self.reader], resource=RESOURCE, shutdown_on_exit=False)
        self.durations = RequestDurations(SCOPE, max_series=max_series)
        assert attach(self.provider, self.durations)

    def record(self, point: Point) -> None:
        method, status, route, error_type, duration_s = point
        self.durations.record(method, status, route, error_type, duration_s)
        self.histogram.record(duration_s, attributes(method, status, route, error_type))

    def collect(self) -> tuple[dict[frozenset, HistogramDataPoint], dict[frozenset, HistogramDataPoint]]:
        return points_of(self.reader.get_metrics_data()), points_of(self.sdk_reader.get_metrics_data())

    def shutdown(self) -> None:
        self.provider.shutdown()
        self.sdk_provider.shutdown()


def assert_same_points(ours: dict[frozenset, HistogramDataPoint], sdk: dict[frozenset, HistogramDataPoint]) -> None:
    assert ours.keys() == sdk.keys()
    for key, point in ours.items():
        expected = sdk[key]
        assert point.count == expected.count
        assert point.sum == expected.sum
        assert tuple(point.bucket_counts) == tuple(expected.bucket_counts)
        assert tuple(point.explicit_bounds) == tuple(expected.explicit_bounds)
        assert (point.min, point.max) == (expected.min, expected.max)
        assert point.start_time_unix_nano <= point.time_unix_nano


durations_s = st.one_of(
    st.sampled_from(REQUEST_DURATION_BUCKETS_S),  # exactly on a boundary: the lower bucket, as the SDK
    st.floats(min_value=0.0, max_value=20.0, allow_nan=False),
    st.sampled_from([-1.0, math.inf, math.nan]),  # dropped by both
)
points = st.tuples(
    st.sampled_from(["GET", "POST", "_OTHER"]),
    st.sampled_from([200, 404, 500, 503]),
    st.sampled_from([None, "/files/{file_id}", "/health"]),
    st.sampled_from([None, "ValueError", "500"]),
    durations_s,
)


@pytest.mark.parametrize("delta", [False, True], ids=["cumulative", "delta"])
@settings(max_examples=40, deadline=None)
@given(batches=st.lists(st.lists(points, max_size=30), min_size=1, max_size=4))
def test_the_points_equal_what_the_sdk_histogram_exports_from_the_same_records(delta, batches):
    pair = Pair(delta=delta)
    try:
        starts: dict[frozenset, int] = {}
        for batch in batches:
            for point in batch:
                pair.record(point)
            ours, sdk = pair.collect()
            assert_same_points(ours, sdk)
            for key, point in ours.items():
                if not delta:  # a cumulative series keeps its start time
                    assert starts.setdefault(key, point.start_time_unix_nano) == point.start_time_unix_nano
    finally:
        pair.shutdown()


def test_cumulative_series_start_when_first_recorded_and_delta_points_start_at_the_previous_collection():
    cumulative, delta = InMemoryMetricReader(), InMemoryMetricReader(preferred_temporality=DELTA)
    provider = MeterProvider(metric_readers=[cumulative, delta], resource=RESOURCE, shutdown_on_exit=False)
    durations = RequestDurations(SCOPE)
    attach(provider, durations)
    try:
        durations.record("GET", 200, "/a", None, 0.01)
        [first] = points_of(cumulative.get_metrics_data()).values()
        durations.record("GET", 500, "/a", "500", 0.02)
        by_status = {
            dict(k)[semconv.HTTP_RESPONSE_STATUS_CODE]: p for k, p in points_of(cumulative.get_metrics_data()).items()
        }
        assert by_status[200].start_time_unix_nano == first.start_time_unix_nano
        assert by_status[500].start_time_unix_nano > first.time_unix_nano  # began after the first collection
        assert by_status[200].count == 1 and by_status[500].count == 1

        data = delta.get_metrics_data()
        assert temporality_of(data) is AggregationTemporality.DELTA
        assert sorted(p.count for p in points_of(data).values()) == [1, 1]  # both, though the other reader took them
        durations.record("GET", 200, "/a", None, 0.03)
        [later] = points_of(delta.get_metrics_data()).values()
        assert later.count == 1 and later.sum == 0.03
        assert later.start_time_unix_nano == next(iter(points_of(data).values())).time_unix_nano
        assert delta.get_metrics_data() is None  # nothing new, nothing at all
        by_status = {
            dict(k)[semconv.HTTP_RESPONSE_STATUS_CODE]: p for k, p in points_of(cumulative.get_metrics_data()).items()
        }
        assert by_status[200].count == 2 and by_status[200].sum == 0.01 + 0.03
    finally:
        provider.shutdown()


def test_the_metric_joins_the_sdk_metrics_of_its_scope_and_resource():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE, shutdown_on_exit=False)
    durations = RequestDurations(SCOPE)
    attach(provider, durations)
    try:
        provider.get_meter(SCOPE).create_histogram("phonoglyph.operation.duration", unit="s").record(1.0)
        provider.get_meter("other").create_counter("other.counter").add(1)
        durations.record("GET", 200, None, None, 0.2)
        data = reader.get_metrics_data()
        assert data is not None
        [resource_metrics] = data.resource_metrics
        assert resource_metrics.resource.attributes["service.name"] == "api"
        scopes = {sm.scope.name: [m.name for m in sm.metrics] for sm in resource_metrics.scope_metrics}
        assert scopes == {
            SCOPE: ["phonoglyph.operation.duration", REQUEST_DURATION],
            "other": ["other.counter"],
        }
        [metric] = [m for sm in resource_metrics.scope_metrics for m in sm.metrics if m.name == REQUEST_DURATION]
        assert (metric.unit, metric.description) == ("s", "Duration of HTTP server requests.")
        assert metric.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
        [point] = metric.data.data_points
        assert point.attributes == {semconv.HTTP_REQUEST_METHOD: "GET", semconv.HTTP_RESPONSE_STATUS_CODE: 200}
    finally:
        provider.shutdown()


def test_alone_it_makes_the_whole_collection_with_the_providers_resource():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE, shutdown_on_exit=False)
    durations = RequestDurations(SCOPE)
    attach(provider, durations)
    try:
        durations.record("GET", 200, "/a", None, 0.2)
        data = reader.get_metrics_data()
        assert data is not None
        [resource_metrics] = data.resource_metrics
        assert resource_metrics.resource is provider._sdk_config.resource
        [scope_metrics] = resource_metrics.scope_metrics
        assert scope_metrics.scope.name == SCOPE
        assert [p.count for p in points_of(data).values()] == [1]
    finally:
        provider.shutdown()


def test_an_empty_aggregator_exports_nothing():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE, shutdown_on_exit=False)
    attach(provider, RequestDurations(SCOPE))
    try:
        assert reader.get_metrics_data() is None
        provider.get_meter("other").create_counter("other.counter").add(1)
        data = reader.get_metrics_data()
        assert (
            data is not None
            and points_of(data) == {}
            and [sm.scope.name for sm in data.resource_metrics[0].scope_metrics] == ["other"]
        )
    finally:
        provider.shutdown()


def test_over_the_series_limit_new_attribute_sets_share_the_overflow_series_and_are_counted():
    STATS.reset()
    pair = Pair(max_series=3)
    try:
        routes = [f"/r{i}" for i in range(6)]
        for route in routes:
            pair.durations.record("GET", 200, route, None, 0.01)
        pair.durations.record("GET", 200, "/r0", None, 0.02)  # an admitted series keeps its own point
        pair.durations.record("GET", 200, "/r5", None, 0.03)
        ours = points_of(pair.reader.get_metrics_data())
        counts = {dict(key).get(semconv.HTTP_ROUTE, "overflow"): p.count for key, p in ours.items()}
        assert counts == {"/r0": 2, "/r1": 1, "/r2": 1, "overflow": 4}
        [overflow] = [p for p in ours.values() if p.attributes == {"otel.metric.overflow": True}]
        assert overflow.sum == pytest.approx(0.01 * 3 + 0.03)
        assert STATS.snapshot()[OVERFLOW_STAT] == 4
    finally:
        pair.shutdown()
        STATS.reset()


def test_records_from_many_threads_are_all_counted():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE, shutdown_on_exit=False)
    durations = RequestDurations(SCOPE)
    attach(provider, durations)
    threads, per_thread = 8, 5000
    collected: list[MetricsData | None] = []
    stop = threading.Event()

    def hammer(index: int) -> None:
        for i in range(per_thread):
            durations.record("GET", 200, "/shared", None, 0.001 * (i % 20))
            durations.record("GET", 200, f"/own/{index}", None, 0.5)

    def collect_meanwhile() -> None:
        while not stop.is_set():
            collected.append(reader.get_metrics_data())

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=hammer, args=(i,)) for i in range(threads)]
        collector = threading.Thread(target=collect_meanwhile)
        collector.start()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        stop.set()
        collector.join()
    finally:
        sys.setswitchinterval(interval)
    try:
        final = points_of(reader.get_metrics_data())
        counts = {dict(key)[semconv.HTTP_ROUTE]: p.count for key, p in final.items()}
        assert counts == {"/shared": threads * per_thread, **{f"/own/{i}": per_thread for i in range(threads)}}
        shared = next(p for p in final.values() if p.attributes[semconv.HTTP_ROUTE] == "/shared")
        assert sum(shared.bucket_counts) == shared.count
        assert shared.sum == pytest.approx(threads * sum(0.001 * (i % 20) for i in range(per_thread)))
    finally:
        provider.shutdown()


def test_exemplars_of_5xx_points_carry_the_current_sampled_span_as_the_sdk_would():
    tracer = TracerProvider().get_tracer("test")
    pair = Pair()
    try:
        with tracer.start_as_current_span("request") as span:
            pair.record(("GET", 503, "/a", "503", 0.07))
            pair.record(("GET", 200, "/a", None, 0.07))
        ours, sdk = pair.collect()
        assert_same_points(ours, sdk)
        error_key = frozenset(attributes("GET", 503, "/a", "503").items())
        [exemplar] = ours[error_key].exemplars
        [expected] = sdk[error_key].exemplars
        context = span.get_span_context()
        assert (exemplar.trace_id, exemplar.span_id) == (context.trace_id, context.span_id)
        assert (exemplar.value, exemplar.trace_id, exemplar.span_id) == (
            expected.value,
            expected.trace_id,
            expected.span_id,
        )
        assert not exemplar.filtered_attributes
        ok_key = frozenset(attributes("GET", 200, "/a", None).items())
        assert list(ours[ok_key].exemplars) == []  # kept for 5xx points only
        ours, _ = pair.collect()
        assert list(ours[error_key].exemplars) == []  # one collection's exemplars, as the SDK's reservoir
    finally:
        pair.shutdown()


def test_without_a_sampled_span_the_trace_based_filter_keeps_no_exemplar_and_always_on_keeps_one():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE, shutdown_on_exit=False)
    on_reader = InMemoryMetricReader()
    always_on = MeterProvider(
        metric_readers=[on_reader], resource=RESOURCE, exemplar_filter=AlwaysOnExemplarFilter(), shutdown_on_exit=False
    )
    trace_based, on = RequestDurations(SCOPE), RequestDurations(SCOPE)
    attach(provider, trace_based)
    attach(always_on, on)
    try:
        for durations in (trace_based, on):
            durations.record("GET", 500, "/a", "500", 0.3)
        [point] = points_of(reader.get_metrics_data()).values()
        assert list(point.exemplars) == []
        [point] = points_of(on_reader.get_metrics_data()).values()
        [exemplar] = point.exemplars
        assert exemplar.value == 0.3 and exemplar.trace_id is None
    finally:
        provider.shutdown()
        always_on.shutdown()


def test_attach_is_once_per_provider_reaches_readers_added_later_and_needs_an_sdk_provider():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE, shutdown_on_exit=False)
    durations = RequestDurations(SCOPE)
    try:
        assert attach(provider, durations)
        assert attach(provider, durations)  # the same one again: nothing changes
        assert not attach(provider, RequestDurations(SCOPE))  # a second aggregator would export the metric twice
        assert not attach(NoOpMeterProvider(), RequestDurations(SCOPE))
        late = InMemoryMetricReader()
        provider.add_metric_reader(late)
        durations.record("POST", 201, "/files", None, 0.1)
        assert [p.count for p in points_of(reader.get_metrics_data()).values()] == [1]
        assert [p.count for p in points_of(late.get_metrics_data()).values()] == [1]
    finally:
        provider.shutdown()


class _OtlpReceiver(BaseHTTPRequestHandler):
    bodies: list[bytes]

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[bytes]]]:
    bodies: list[bytes] = []
    handler = type("Receiver", (_OtlpReceiver,), {"bodies": bodies})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/metrics", bodies
    finally:
        server.shutdown()
        server.server_close()


def test_the_otlp_exporter_sends_the_histogram_as_the_collector_reads_it(otlp_receiver):
    endpoint, bodies = otlp_receiver
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint), export_interval_millis=math.inf)
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE, shutdown_on_exit=False)
    durations = RequestDurations(SCOPE)
    attach(provider, durations)
    try:
        for duration_s in (0.004, 0.005, 0.2, 12.0):
            durations.record("GET", 200, "/files/{file_id}", None, duration_s)
        durations.record("POST", 500, None, "RuntimeError", 0.3)
        provider.force_flush()
        durations.record("POST", 500, None, "RuntimeError", 0.1)
        provider.force_flush()
    finally:
        provider.shutdown()
    requests = [ExportMetricsServiceRequest.FromString(body) for body in bodies]
    assert len(requests) >= 2
    first, second = requests[0], requests[1]
    [resource_metrics] = first.resource_metrics
    assert {kv.key: kv.value.string_value for kv in resource_metrics.resource.attributes}["service.name"] == "api"
    [scope_metrics] = resource_metrics.scope_metrics
    assert scope_metrics.scope.name == SCOPE
    [metric] = scope_metrics.metrics
    assert (metric.name, metric.unit, metric.WhichOneof("data")) == (REQUEST_DURATION, "s", "histogram")
    assert metric.histogram.aggregation_temporality == 2  # CUMULATIVE, what the collector differences

    def decoded(request: ExportMetricsServiceRequest) -> dict[tuple, Any]:
        [metric] = request.resource_metrics[0].scope_metrics[0].metrics
        result = {}
        for point in metric.histogram.data_points:
            attrs = {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in point.attributes}
            result[tuple(sorted(attrs.items()))] = point
        return result

    points = decoded(first)
    ok = points[
        (("http.request.method", "GET"), ("http.response.status_code", 200), ("http.route", "/files/{file_id}"))
    ]
    assert list(ok.explicit_bounds) == list(REQUEST_DURATION_BUCKETS_S)
    assert list(ok.bucket_counts) == [2, 0, 0, 0, 0, 0, 1] + [0] * 7 + [1]
    assert (ok.count, ok.sum, ok.min, ok.max) == (4, 0.004 + 0.005 + 0.2 + 12.0, 0.004, 12.0)
    error_key = (("error.type", "RuntimeError"), ("http.request.method", "POST"), ("http.response.status_code", 500))
    error = points[error_key]
    assert error.count == 1
    later = decoded(second)
    assert later[error_key].count == 2
    assert later[error_key].start_time_unix_nano == error.start_time_unix_nano  # not read as a restart
    assert later[error_key].time_unix_nano > error.time_unix_nano


def test_the_collectors_http_error_rate_rule_fires_on_it_with_the_traces_of_the_errors(tmp_path):
    """What the collector reads: CUMULATIVE points differenced per series, a series that began after the
    collector counted whole, and the trace ids of 5xx exemplars as the alert's examples."""
    from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics

    from collector.alerting import build_alerting
    from tests.unit.collector.alerting.helpers import Clock

    rule = {"name": "api_errors", "when": "http_error_rate", "route": "*", "window_s": 300, "above": 0.05}
    rules = [{**rule, "min_count": 20, "severity": "critical"}]
    clock = Clock(time.time())
    alerting = build_alerting({"evaluation_interval_s": 60, "rules": rules}, tmp_path, clock=clock)
    assert alerting is not None
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE, shutdown_on_exit=False)
    durations = RequestDurations(SCOPE)
    attach(provider, durations)
    tracer = TracerProvider().get_tracer("test")

    def export() -> None:
        data = reader.get_metrics_data()
        assert data is not None
        alerting.observe_metrics(encode_metrics(data))

    try:
        for _ in range(40):
            durations.record("POST", 200, "/billing/webhook", None, 0.01)
        export()
        clock.advance(10)
        assert alerting.evaluate_once() == []
        export()  # the same cumulative counts again: nothing new
        clock.advance(10)
        assert alerting.evaluate_once() == []
        with tracer.start_as_current_span("POST /billing/webhook") as span:
            for _ in range(5):
                durations.record("POST", 503, "/billing/webhook", "503", 0.01)
        export()
        transitions = alerting.evaluate_once()
        assert [(t.rule, t.subject, t.status) for t in transitions] == [("api_errors", "/billing/webhook", "firing")]
        assert transitions[0].snapshot["value"] == 5 / 45
        assert transitions[0].snapshot["trace_ids"] == [format(span.get_span_context().trace_id, "032x")]
    finally:
        provider.shutdown()
        alerting.shutdown(5)
