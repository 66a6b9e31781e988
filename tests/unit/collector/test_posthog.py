"""PostHogExporter's classification of /batch/ answers (the wire itself: tests/integration/collector)."""

import gzip
import json
from datetime import UTC, datetime

import pytest
import requests

from collector.events import StoredEvent, encode_event
from collector.exporters import Rejected, RetryLater, TooLarge, Unauthorized
from collector.exporters.posthog import PostHogExporter, batch_body, classify


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

    seen = {}
    exporter = PostHogExporter("phc_test", host="http://127.0.0.1:9")

    def recording_post(url, **kwargs):
        seen["instrumentation"] = is_instrumentation_enabled()
        seen["http_instrumentation"] = is_http_instrumentation_enabled()
        raise requests.ConnectionError("recorded, not sent")

    monkeypatch.setattr(exporter._session, "post", recording_post)
    try:
        with pytest.raises(RetryLater, match="recorded, not sent"):
            exporter.export([{"event": "e", "distinct_id": "d", "uuid": "u"}])
    finally:
        exporter.shutdown()
    assert seen == {"instrumentation": False, "http_instrumentation": False}
    assert is_instrumentation_enabled()  # only for the duration of the call


def test_gzip_level_is_checked():
    with pytest.raises(ValueError, match="gzip_level"):
        PostHogExporter("phc_test", host="http://127.0.0.1:9", gzip_level=0)


def test_batch_body_splices_stored_payloads_unchanged():
    stored = StoredEvent("u1", b'{"event":"as stored","uuid":"u1"}', 33)
    plain = {"event": "plain", "uuid": "u2", "properties": {"\u00e9": 1.5}}
    body = batch_body([stored, plain], api_key='phc_"key', sent_at="2026-11-28T05:00:00+00:00")
    assert body == (
        b'{"batch": [{"event":"as stored","uuid":"u1"}, '
        + encode_event(plain).encode()
        + b'], "sent_at": "2026-11-28T05:00:00+00:00", "api_key": "phc_\\"key"}'
    )
    assert json.loads(body)["api_key"] == 'phc_"key'


def test_batch_body_matches_batch_post_field_for_field(monkeypatch):
    """The body posthog-python's batch_post builds, taken from its own code, equals ours once
    decoded, with the same keys in the same order (sent_at pinned in both)."""
    import posthog.request as request_module

    class PinnedDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 11, 28, 5, 0, 0, 123456, tzinfo=UTC)

    monkeypatch.setattr(request_module, "datetime", PinnedDatetime)
    batch = [
        {
            "event": "render_completed",
            "distinct_id": "user-1",
            "uuid": "u1",
            "timestamp": "2026-11-28T04:00:00+00:00",
            "properties": {"processing_time_ms": 12.5, "nested": {"a": [1, None, True]}, "name": "ü\u2028"},
        },
        {"event": "file_uploaded", "distinct_id": "user-2", "uuid": "u2", "properties": {}},
    ]
    captured = {}

    class CapturingSession:
        def post(self, url, data, headers, timeout):
            captured.update(url=url, data=data, headers=headers)
            response = requests.Response()
            response.status_code = 200
            return response

    exporter = PostHogExporter("phc_test", host="https://eu.posthog.com/")
    # what the exporter used to do: batch_post to the exporter's (ingestion) host
    request_module.batch_post("phc_test", host=exporter.host, gzip=True, session=CapturingSession(), batch=batch)
    theirs = gzip.decompress(captured["data"])
    ours = batch_body(
        [StoredEvent.of(event) for event in batch],
        api_key="phc_test",
        sent_at=PinnedDatetime.now(UTC).isoformat(),
    )
    assert json.loads(ours) == json.loads(theirs)
    assert list(json.loads(ours)) == list(json.loads(theirs)) == ["batch", "sent_at", "api_key"]
    # the envelope is byte-identical; only the events' inner whitespace and escaping differ
    assert ours.startswith(b'{"batch": [{') and theirs.startswith(b'{"batch": [{')
    assert ours[ours.rindex(b"]") :] == theirs[theirs.rindex(b"]") :]
    try:
        assert exporter.url == captured["url"] == "https://eu.i.posthog.com/batch/"
        assert exporter._headers == captured["headers"]
    finally:
        exporter.shutdown()
