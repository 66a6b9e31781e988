"""PostHogExporter's classification of /batch/ answers (the wire itself: tests/integration/collector)."""

import pytest

from collector.exporters import Rejected, RetryLater, TooLarge, Unauthorized
from collector.exporters.posthog import PostHogExporter, classify


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, Rejected),
        (413, TooLarge),
        (401, Unauthorized),
        (403, Unauthorized),
        (408, RetryLater),
        (429, RetryLater),
        (500, RetryLater),
        (502, RetryLater),
        (503, RetryLater),
        (504, RetryLater),
        (404, RetryLater),  # a misrouted proxy: keep the events
    ],
)
def test_status_classes(status, kind):
    error = classify(status, "detail", 7.0)
    assert type(error) is kind
    assert str(error).startswith(f"HTTP {status}: detail")


def test_retry_after_is_carried():
    assert classify(429, "slow down", 12.0).retry_after_s == 12.0
    assert classify(503, "busy", None).retry_after_s is None


def test_detail_is_truncated():
    assert len(str(classify(400, "x" * 10_000, None))) < 400


def test_api_key_is_required():
    with pytest.raises(ValueError):
        PostHogExporter("", host="http://127.0.0.1:1")


def test_refused_connection_is_retry_later():
    exporter = PostHogExporter("phc_test", host="http://127.0.0.1:9", timeout_s=2)
    try:
        with pytest.raises(RetryLater, match="network error"):
            exporter.export([{"event": "e", "distinct_id": "d", "uuid": "u"}])
    finally:
        exporter.shutdown()


def test_app_hosts_map_to_ingestion_hosts():
    exporter = PostHogExporter("phc_test", host="https://eu.posthog.com")
    assert exporter.host == "https://eu.i.posthog.com"
    exporter.shutdown()


def test_export_is_not_traced_by_our_instrumentation(monkeypatch):
    from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled, is_instrumentation_enabled

    import collector.exporters.posthog as module

    seen = {}

    def fake_batch_post(api_key, **kwargs):
        seen["instrumentation"] = is_instrumentation_enabled()
        seen["http_instrumentation"] = is_http_instrumentation_enabled()
        seen["kwargs"] = sorted(kwargs)

    monkeypatch.setattr(module, "batch_post", fake_batch_post)
    exporter = PostHogExporter("phc_test", host="http://127.0.0.1:9")
    try:
        exporter.export([{"event": "e", "distinct_id": "d", "uuid": "u"}])
    finally:
        exporter.shutdown()
    assert seen == {
        "instrumentation": False,
        "http_instrumentation": False,
        "kwargs": ["batch", "gzip", "host", "session", "timeout"],
    }
    assert is_instrumentation_enabled()  # only for the duration of the call
