"""PostHogExporter against the strict fake PostHog: the official wire format, and every answer classified.

The fake's own strictness is checked here too, with raw requests: it must refuse what PostHog refuses.
"""

import gzip
import json
import uuid

import pytest
import requests

from collector.delivery.outbox import Outbox
from collector.events import StoredEvent
from collector.exporters import Rejected, RetryLater, TooLarge, Unauthorized
from collector.exporters.posthog import PostHogExporter
from tests.fakes.posthog import Answer

pytestmark = pytest.mark.integration


def event(n: int, **overrides) -> dict:
    base = {
        "event": "credits_purchased",
        "distinct_id": f"user-{n}",
        "properties": {"credits": n, "$ignore_sent_at": True, "trace_id": "ab" * 16},
        "timestamp": "2026-11-28T04:00:00.123456+00:00",
        "uuid": str(uuid.UUID(int=n + 1, version=4)),
    }
    base.update(overrides)
    return base


@pytest.fixture
def exporter(posthog):
    exp = PostHogExporter("phc_test", host=posthog.host, timeout_s=5)
    try:
        yield exp
    finally:
        exp.shutdown()


def test_official_wire_format(posthog, exporter):
    batch = [event(1), event(2, properties={"nested": {"a": [1, 2.5, None]}, "é": "ü"})]
    exporter.export(batch)
    assert posthog.events == batch  # every key as mapped, never recomputed
    (request,) = posthog.requests
    assert request.path == "/batch/"
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("posthog-python/")
    body = json.loads(gzip.decompress(request.body))
    assert set(body) == {"batch", "api_key", "sent_at"}
    assert body["api_key"] == "phc_test"
    assert body["batch"] == batch


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_answers_are_retry_later_with_retry_after(posthog, exporter, status):
    posthog.script(Answer(status, {"Retry-After": "7"}))
    with pytest.raises(RetryLater) as caught:
        exporter.export([event(1)])
    assert caught.value.retry_after_s == 7.0
    assert posthog.events == []
    exporter.export([event(1)])  # one attempt per call: the next call is the retry
    assert posthog.uuids() == [event(1)["uuid"]]


def test_dropped_connection_is_retry_later(posthog, exporter):
    posthog.script("drop")
    with pytest.raises(RetryLater, match="network error"):
        exporter.export([event(1)])
    assert len(posthog.requests) == 1  # no retry hidden in the transport
    exporter.export([event(1)])
    assert posthog.uuids() == [event(1)["uuid"]]


def test_partial_write_then_503_redelivers_identical_copies(posthog, exporter):
    posthog.script("partial")
    with pytest.raises(RetryLater):
        exporter.export([event(1), event(2)])
    exporter.export([event(1), event(2)])
    assert posthog.events == [event(1), event(2), event(1), event(2)]  # duplicates, same uuids


def test_invalid_event_rejects_the_whole_batch(posthog, exporter):
    with pytest.raises(Rejected, match="HTTP 400: event 1: invalid uuid"):
        exporter.export([event(1), event(2, uuid="not-a-uuid"), event(3)])
    assert posthog.events == []


def test_wrong_api_key_is_unauthorized(posthog):
    exp = PostHogExporter("phc_wrong", host=posthog.host, timeout_s=5)
    try:
        with pytest.raises(Unauthorized, match="HTTP 401"):
            exp.export([event(1)])
    finally:
        exp.shutdown()
    assert posthog.events == []


def test_oversized_event_is_too_large(posthog, exporter):
    with pytest.raises(TooLarge, match="HTTP 413"):
        exporter.export([event(1), event(2, properties={"blob": "x" * (2**20 + 10)})])
    assert posthog.events == []


def test_scripted_403_and_413(posthog, exporter):
    posthog.script(403, 413)
    with pytest.raises(Unauthorized):
        exporter.export([event(1)])
    with pytest.raises(TooLarge):
        exporter.export([event(1)])


# -- the fake refuses what PostHog refuses --------------------------------------------------


def post(posthog, body, *, compress=False, raw: bytes | None = None):
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if compress:
        data = gzip.compress(data)
        headers["Content-Encoding"] = "gzip"
    return requests.post(posthog.host + "/batch/", data=data, headers=headers, timeout=10)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"batch": [event(1)]}, 401),
        ({"api_key": "", "batch": [event(1)]}, 401),
        ({"api_key": "phc_other", "batch": [event(1)]}, 401),
        ({"api_key": "phc_test"}, 400),
        ({"api_key": "phc_test", "batch": []}, 400),
        ({"api_key": "phc_test", "batch": {"event": "x"}}, 400),
        ({"api_key": "phc_test", "batch": [event(1, event="")]}, 400),
        ({"api_key": "phc_test", "batch": [{k: v for k, v in event(1).items() if k != "event"}]}, 400),
        ({"api_key": "phc_test", "batch": [event(1, distinct_id="")]}, 400),
        ({"api_key": "phc_test", "batch": [{k: v for k, v in event(1).items() if k != "distinct_id"}]}, 400),
        ({"api_key": "phc_test", "batch": [event(1, uuid="1234")]}, 400),
        ({"api_key": "phc_test", "batch": [event(1, timestamp="yesterday")]}, 400),
        ({"api_key": "phc_test", "batch": [event(1, properties=["a"])]}, 400),
        ({"api_key": "phc_test", "batch": [event(1), "not an event"]}, 400),
        ({"api_key": "phc_test", "batch": [event(1)], "sent_at": "soon"}, 400),
        ({"token": "phc_test", "batch": [event(1)]}, 200),
        ({"api_key": "phc_test", "batch": [event(1)]}, 200),
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_fake_validates_like_posthog(posthog, body, status, compress):
    assert post(posthog, body, compress=compress).status_code == status
    assert len(posthog.events) == (1 if status == 200 else 0)


def test_fake_refuses_garbage_and_oversize(posthog):
    assert post(posthog, None, raw=b"{not json").status_code == 400
    assert post(posthog, None, raw=b"[1, 2]").status_code == 400
    bad_gzip = requests.post(
        posthog.host + "/batch/", data=b"\x1f\x8b garbage", headers={"Content-Encoding": "gzip"}, timeout=10
    )
    assert bad_gzip.status_code == 400
    big = {"api_key": "phc_test", "batch": [event(n, properties={"pad": "x" * 900_000}) for n in range(24)]}
    assert post(posthog, big).status_code == 413  # over 20 MiB
    assert post(posthog, big, compress=True).status_code == 413  # over 20 MiB once decompressed
    assert posthog.events == []
    assert requests.post(posthog.host + "/capture/", data=b"{}", timeout=10).status_code == 404


# -- byte-compatible with posthog-python's batch_post ----------------------------------------


def test_same_request_as_batch_post(posthog, exporter):
    """One batch sent by batch_post itself and by the exporter: same URL, headers and decoded body."""
    from posthog.request import batch_post

    batch = [event(1), event(2, properties={"nested": {"a": [1, 2.5, None]}, "é": "ü\u2028"})]
    batch_post("phc_test", host=posthog.host, gzip=True, timeout=5, session=requests.Session(), batch=batch)
    exporter.export([StoredEvent.of(e) for e in batch])
    theirs, ours = posthog.requests
    assert ours.path == theirs.path == "/batch/"
    for header in ("content-type", "content-encoding", "user-agent"):
        assert ours.headers[header] == theirs.headers[header]
    their_body, our_body = (json.loads(gzip.decompress(r.body)) for r in (theirs, ours))
    assert list(our_body) == list(their_body) == ["batch", "sent_at", "api_key"]
    their_body.pop("sent_at"), our_body.pop("sent_at")
    assert our_body == their_body
    assert posthog.events == batch + batch


def test_stored_payload_is_sent_as_stored(posthog, exporter):
    stored = json.dumps(event(1, event="as_stored"), separators=(",", ":")).encode()
    exporter.export([StoredEvent(event(1)["uuid"], stored, len(stored))])
    assert [e["event"] for e in posthog.events] == ["as_stored"]


def test_non_finite_floats_arrive_as_valid_json(posthog, exporter, tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    try:
        box.put([event(1, properties={"nan": float("nan"), "inf": [float("inf"), 1.5], "ok": 2.0})])
        exporter.export(box.claim(max_events=10, max_bytes=2**20))
    finally:
        box.close()
    (request,) = posthog.requests

    def refuse(token):
        raise AssertionError(f"{token} is not JSON")

    body = json.loads(gzip.decompress(request.body), parse_constant=refuse)
    assert body["batch"][0]["properties"] == {"nan": None, "inf": [None, 1.5], "ok": 2.0}
