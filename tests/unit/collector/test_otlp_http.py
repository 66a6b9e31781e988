"""The OTLP/HTTP receiver driven as an ASGI app, with a fake consumer: statuses, limits, answers."""

import asyncio
import gzip
import json
import threading

from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from collector.config import LimitsConfig
from collector.metrics import Metrics
from collector.pipeline import ConsumeResult, RetryableError
from collector.receivers.otlp_http import OtlpHttpReceiver
from tests.unit.collector.otlp_builders import logs, record

BODY = logs(
    record("file_uploaded", {"phonoglyph.event.id": "0b6f4b8e-2f3a-4c1d-9e8f-7a6b5c4d3e2f"})
).SerializeToString()


class Consumer:
    def __init__(self, result=ConsumeResult(), error=None):
        self.calls = []
        self.result = result
        self.error = error

    def consume(self, signal, request, raw_body):
        self.calls.append((signal, request, raw_body))
        if self.error is not None:
            raise self.error
        return self.result


async def asgi(app, path, body=b"", *, method="POST", headers=None):
    """One request through the ASGI app: (status, headers, body)."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    if headers is None:
        headers = [(b"content-type", b"application/x-protobuf")]
    await app({"type": "http", "path": path, "method": method, "headers": headers}, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def receiver(consumer, **kwargs):
    return OtlpHttpReceiver(consumer, metrics=kwargs.pop("metrics", Metrics()), limits=LimitsConfig(), **kwargs)


async def test_a_decoded_request_goes_to_the_consumer_and_the_answer_reports_rejections():
    consumer = Consumer(ConsumeResult(rejected=1, error_message="bad ids"))
    app = receiver(consumer)
    try:
        status, headers, body = await asgi(
            app,
            "/v1/logs",
            gzip.compress(BODY),
            headers=[
                (b"content-type", b"application/x-protobuf"),
                (b"content-encoding", b"gzip"),
            ],
        )
    finally:
        app.shutdown()
    assert (status, headers[b"content-type"]) == (200, b"application/x-protobuf")
    assert ExportLogsServiceResponse.FromString(body).partial_success.rejected_log_records == 1
    [(signal, request, raw_body)] = consumer.calls
    assert (signal, raw_body) == ("logs", BODY)
    assert request.resource_logs[0].scope_logs[0].log_records[0].event_name == "file_uploaded"


async def test_json_requests_hand_on_no_raw_body():
    consumer = Consumer()
    app = receiver(consumer)
    try:
        status, _, body = await asgi(app, "/v1/traces", b"{}", headers=[(b"content-type", b"application/json")])
    finally:
        app.shutdown()
    assert (status, body) == (200, b"{}")
    assert consumer.calls[0][0] == "traces" and consumer.calls[0][2] is None


async def test_retryable_errors_become_their_status_with_retry_after():
    for status in (429, 503):
        metrics = Metrics()
        app = receiver(Consumer(error=RetryableError(status, "later", retry_after_s=7)), metrics=metrics)
        try:
            answer, headers, body = await asgi(app, "/v1/logs", BODY)
        finally:
            app.shutdown()
        assert (answer, headers[b"retry-after"], Status.FromString(body).message) == (status, b"7", "later")
        assert metrics.value("rejected_requests_total", status=str(status)) == 1


async def test_a_consumer_bug_is_500_and_no_crash():
    app = receiver(Consumer(error=KeyError("bug")))
    try:
        assert (await asgi(app, "/v1/logs", BODY))[0] == 500
    finally:
        app.shutdown()


async def test_checks_before_the_consumer():
    consumer = Consumer()
    app = receiver(consumer, auth_token="t")
    auth = (b"authorization", b"Bearer t")
    try:
        assert (await asgi(app, "/v1/logs", BODY))[0] == 401
        assert (await asgi(app, "/v1/logs", BODY, headers=[auth, (b"content-type", b"text/plain")]))[0] == 415
        undecodable = await asgi(
            app, "/v1/logs", b"\xff\xff", headers=[auth, (b"content-type", b"application/x-protobuf")]
        )
        assert undecodable[0] == 400
        status, headers, _ = await asgi(app, "/v1/logs", method="GET")
        assert (status, headers[b"allow"]) == (405, b"POST")
    finally:
        app.shutdown()
    assert consumer.calls == []


async def test_too_many_requests_in_flight_is_429():
    entered, release = threading.Event(), threading.Event()

    class SlowConsumer:
        def consume(self, signal, request, raw_body):
            entered.set()
            release.wait(10)
            return ConsumeResult()

    app = OtlpHttpReceiver(
        SlowConsumer(), metrics=Metrics(), limits=LimitsConfig(max_inflight_requests=1, retry_after_s=2)
    )
    try:
        first = asyncio.ensure_future(asgi(app, "/v1/logs", BODY))
        await asyncio.get_running_loop().run_in_executor(None, entered.wait, 10)
        status, headers, _ = await asgi(app, "/v1/logs", BODY)
        assert (status, headers[b"retry-after"]) == (429, b"2")
        release.set()
        assert (await first)[0] == 200
    finally:
        release.set()
        app.shutdown()


async def test_an_empty_body_is_200_with_an_empty_answer_in_both_encodings():
    consumer = Consumer()
    app = receiver(consumer)
    try:
        for content_type, empty_answer in ((b"application/x-protobuf", b""), (b"application/json", b"{}")):
            for body in (b"", gzip.compress(b"")):
                headers = [(b"content-type", content_type)]
                if body:
                    headers.append((b"content-encoding", b"gzip"))
                status, _, answer = await asgi(app, "/v1/traces", body, headers=headers)
                assert (status, answer) == (200, empty_answer)
    finally:
        app.shutdown()
    assert all(request.ByteSize() == 0 for _, request, _ in consumer.calls) and len(consumer.calls) == 4


async def test_items_that_do_not_decode_are_reported_with_the_consumers_rejections():
    consumer = Consumer(ConsumeResult(rejected=1, error_message="invalid trace_id or span_id"))
    metrics = Metrics()
    app = receiver(consumer, metrics=metrics)
    good = '{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "ok"}'
    body = f'{{"resourceSpans": [{{"scopeSpans": [{{"spans": [{good}, {{"spanId": "not hex"}}]}}]}}]}}'
    try:
        status, _, answer = await asgi(
            app, "/v1/traces", body.encode(), headers=[(b"content-type", b"application/json")]
        )
    finally:
        app.shutdown()
    assert status == 200
    partial = json.loads(answer)["partialSuccess"]
    assert partial["rejectedSpans"] == "2"
    assert partial["errorMessage"] == "a span that does not decode: spanId is not hex; invalid trace_id or span_id"
    [(_, request, _)] = consumer.calls
    assert [span.name for span in request.resource_spans[0].scope_spans[0].spans] == ["ok"]
    assert metrics.value("dropped_items_total", reason="undecodable") == 1
