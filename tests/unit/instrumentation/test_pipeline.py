"""The Pipeline's request durations: attached to the installed MeterProvider, usable before configure()."""

from __future__ import annotations

from instrumentation import semconv
from instrumentation._internal import pipeline
from instrumentation._internal.request_metrics import REQUEST_DURATION, RequestDurations
from instrumentation.testing import Captured


def test_request_durations_reach_the_installed_providers_readers(captured: Captured) -> None:
    pipeline.current().request_durations.record("GET", 200, "/files/{file_id}", None, 0.02)
    pipeline.current().request_durations.record("GET", 200, "/files/{file_id}", None, 0.04)
    [point] = captured.histogram_points(REQUEST_DURATION)
    assert point["attributes"] == {
        semconv.HTTP_REQUEST_METHOD: "GET",
        semconv.HTTP_RESPONSE_STATUS_CODE: 200,
        semconv.HTTP_ROUTE: "/files/{file_id}",
    }
    assert (point["count"], point["sum"]) == (2, 0.02 + 0.04)


def test_a_pipeline_without_providers_records_into_an_unattached_aggregator() -> None:
    unconfigured = pipeline.Pipeline()
    assert isinstance(unconfigured.request_durations, RequestDurations)
    unconfigured.request_durations.record("GET", 200, None, None, 0.01)
