"""Foreign OTLP input against a running collector: payloads in the shape of opentelemetry-proto's
``examples/*.json`` (written here, not copied), the Python SDK's encoders and exporter, and the OTLP/HTTP
spec's edge cases. Every item is accounted for (an event, ignored, or rejected in ``partial_success``);
none is merged with another."""

import base64
import json

import httpx
import pytest
from google.protobuf import json_format

from collector.exporters.local import LocalStoreExporter
from tests.integration.collector.collector_process import CollectorProcess, wait_for

pytestmark = pytest.mark.integration

T = "1764300000000000000"
TRACE = "5B8EFFF798038103D269B633813FC60C"  # upper-case hex, as the official examples write it
JSON = {"content-type": "application/json"}
PROTOBUF = {"content-type": "application/x-protobuf"}


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    with CollectorProcess(tmp_path_factory.mktemp("collector")) as process:
        yield process


def post(collector, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{collector.url}{path}", content=body, headers=headers, timeout=30)


def stored(collector, predicate, count: int) -> list[dict]:
    store = LocalStoreExporter(collector.data_dir / "events.db")
    try:

        def matching():
            events = [event for event in store.read_events() if predicate(event)]
            return events if len(events) >= count else None

        return wait_for(matching, message=f"{count} events in the local store")
    finally:
        store.shutdown()


def drained(collector) -> None:
    """Wait until every queued event reached the local store (idempotent by uuid, as PostHog is)."""
    wait_for(
        lambda: collector.metric("delivered_events_total") >= collector.metric("queued_events_total"),
        message="the outbox delivered",
    )


def value(text: str) -> dict:
    return {"stringValue": text}


def attribute(key: str, any_value: dict) -> dict:
    return {"key": key, "value": any_value}


def resource(service: str) -> dict:
    return {"attributes": [attribute("service.name", value(service))]}


SCOPE = {"name": "my.library", "version": "1.0.0", "attributes": [attribute("my.scope.attribute", value("s"))]}


def test_browser_events_from_twenty_users_in_one_batch_are_twenty_events(collector):
    """The shape of examples/events.json: event records with no phonoglyph.event.id, one time, one span."""
    records = [
        {
            "eventName": "browser.page_view",
            "timeUnixNano": T,
            "observedTimeUnixNano": T,
            "severityNumber": 9,
            "traceId": TRACE,
            "spanId": "EEE19B7EC3C1B174",
            "attributes": [attribute("user.id", value(f"browser-user-{index}"))],
            "body": {"kvlistValue": {"values": [attribute("url", value(f"https://example.test/p/{index}"))]}},
        }
        for index in range(20)
    ]
    body = {"resourceLogs": [{"resource": resource("web"), "scopeLogs": [{"scope": SCOPE, "logRecords": records}]}]}
    answer = post(collector, "/v1/logs", json.dumps(body).encode(), JSON)
    assert (answer.status_code, answer.json()) == (200, {})
    events = stored(collector, lambda event: event["distinct_id"].startswith("browser-user-"), 20)
    assert len({event["uuid"] for event in events}) == 20
    # a true resend of the same request adds nothing
    assert post(collector, "/v1/logs", json.dumps(body).encode(), JSON).status_code == 200
    drained(collector)
    assert len(stored(collector, lambda event: event["distinct_id"].startswith("browser-user-"), 20)) == 20


def test_the_example_shapes_of_traces_logs_and_metrics_are_accepted(collector):
    span = {
        "traceId": TRACE,
        "spanId": "EEE19B7EC3C1B174",
        "parentSpanId": "EEE19B7EC3C1B173",
        "name": "I'm a server span",
        "startTimeUnixNano": T,
        "endTimeUnixNano": "1764300001000000000",
        "kind": 2,
        "attributes": [attribute("my.span.attr", value("some value"))],
    }
    traces = {
        "resourceSpans": [{"resource": resource("my.service"), "scopeSpans": [{"scope": SCOPE, "spans": [span]}]}]
    }
    received = collector.metric("received_spans_total")
    answer = post(collector, "/v1/traces", json.dumps(traces).encode(), JSON)
    assert (answer.status_code, answer.json()) == (200, {})
    assert collector.metric("received_spans_total") == received + 1

    log = {
        "timeUnixNano": T,
        "observedTimeUnixNano": T,
        "severityNumber": 10,
        "severityText": "Information",
        "traceId": TRACE,
        "spanId": "EEE19B7EC3C1B174",
        "body": value("Example log record"),
        "attributes": [
            attribute("string.attribute", value("some string")),
            attribute("boolean.attribute", {"boolValue": True}),
            attribute("int.attribute", {"intValue": "10"}),
            attribute("double.attribute", {"doubleValue": 637.704}),
            attribute("array.attribute", {"arrayValue": {"values": [value("many"), value("values")]}}),
            attribute("map.attribute", {"kvlistValue": {"values": [attribute("some.map.key", value("v"))]}}),
        ],
    }
    logs = {
        "resourceLogs": [{"resource": resource("my.service"), "scopeLogs": [{"scope": SCOPE, "logRecords": [log]}]}]
    }
    answer = post(collector, "/v1/logs", json.dumps(logs).encode(), JSON)
    assert (answer.status_code, answer.json()) == (200, {})

    exemplar = {"timeUnixNano": T, "asDouble": 1.5, "traceId": TRACE, "spanId": "EEE19B7EC3C1B174"}
    point = {"startTimeUnixNano": T, "timeUnixNano": T, "attributes": [attribute("my.counter.attr", value("x"))]}
    metrics = [
        {"name": "my.counter", "unit": "1", "sum": {"aggregationTemporality": 1, "isMonotonic": True,
                                                   "dataPoints": [{**point, "asDouble": 5, "exemplars": [exemplar]}]}},
        {"name": "my.gauge", "gauge": {"dataPoints": [{**point, "asDouble": 10}]}},
        {"name": "my.histogram", "histogram": {"aggregationTemporality": 1, "dataPoints": [
            {**point, "count": "2", "sum": 2, "bucketCounts": ["1", "1"], "explicitBounds": [1], "min": 0, "max": 2}]}},
        {"name": "my.exponential.histogram", "exponentialHistogram": {"aggregationTemporality": 1, "dataPoints": [
            {**point, "count": "3", "sum": 10, "scale": 0, "zeroCount": "1",
             "positive": {"offset": 1, "bucketCounts": ["0", "2"]}, "min": 0, "max": 5, "zeroThreshold": 0}]}},
        {"name": "my.summary", "summary": {"dataPoints": [
            {**point, "count": "1", "sum": 1, "quantileValues": [{"quantile": 0.5, "value": 1}]}]}},
    ]  # fmt: skip
    body = {
        "resourceMetrics": [
            {"resource": resource("my.service"), "scopeMetrics": [{"scope": SCOPE, "metrics": metrics}]}
        ]
    }
    points = collector.metric("received_metric_points_total")
    answer = post(collector, "/v1/metrics", json.dumps(body).encode(), JSON)
    assert (answer.status_code, answer.json()) == (200, {})
    assert collector.metric("received_metric_points_total") == points + 5


def test_spec_edge_cases_empty_bodies_unknown_fields_and_bad_items(collector):
    for path in ("/v1/traces", "/v1/logs", "/v1/metrics"):
        assert (post(collector, path, b"", PROTOBUF).status_code, post(collector, path, b"", PROTOBUF).content) == (
            200,
            b"",
        )
        answer = post(collector, path, b"", JSON)
        assert (answer.status_code, answer.json()) == (200, {})

    def span(span_id: str, **fields) -> dict:
        return {
            "traceId": TRACE,
            "spanId": span_id,
            "name": "op",
            "startTimeUnixNano": T,
            "endTimeUnixNano": "1764300001000000000",
            "attributes": [attribute("phonoglyph.operation", value("foreign_op")), attribute("user.id", value("edge"))],
            **fields,
        }

    deep = "@deep@"
    spans = [
        span("0000000000000001", futureField={"traceId": "not hex", "spanId": {"nested": True}}),
        span("not hex"),
        span("0000000000000003", attributes=[attribute("deep", deep)]),
        span("0000000000000004", attributes=[attribute("phonoglyph.operation", value("foreign_op"))]),
    ]
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}], "futureTop": {"spanId": "x"}})
    levels = 300  # deeper than json.loads takes whole
    nested = '{"kvlistValue": {"values": [{"key": "k", "value": ' * levels + '{"stringValue": "b"}' + "}]}}" * levels
    answer = post(collector, "/v1/traces", body.replace(f'"{deep}"', nested).encode(), JSON)
    assert answer.status_code == 200
    partial = answer.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "2" and "spanId is not hex" in partial["errorMessage"]
    events = stored(collector, lambda event: event["event"] == "foreign_op_completed", 2)
    assert sorted(event["properties"]["span_id"] for event in events) == ["0000000000000001", "0000000000000004"]


def test_the_python_sdk_exporter_and_encoders_in_both_encodings(collector):
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, LogRecordExportResult
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor as SimpleLogs
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    sdk_resource = Resource.create({"service.name": "sdk-client"})
    captured_logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(resource=sdk_resource)
    logger_provider.add_log_record_processor(SimpleLogs(captured_logs))
    logger = logger_provider.get_logger("sdk")
    for index in range(20):  # one time for all: only their content differs
        logger.emit(event_name="sdk_event", timestamp=int(T), attributes={"user.id": f"sdk-user-{index}"})
    batch = captured_logs.get_finished_logs()
    assert len(batch) == 20
    exporter = OTLPLogExporter(endpoint=f"{collector.url}/v1/logs")
    assert exporter.export(batch) == LogRecordExportResult.SUCCESS
    exporter.shutdown()
    events = stored(collector, lambda event: event["event"] == "sdk_event", 20)
    assert len({event["uuid"] for event in events}) == 20

    # the same records as OTLP/JSON (hex ids, int64 as strings): the same content, so the same uuids
    document = json_format.MessageToDict(encode_logs(batch), use_integers_for_enums=True)
    answer = post(collector, "/v1/logs", json.dumps(_hex_ids(document)).encode(), JSON)
    assert (answer.status_code, answer.json()) == (200, {})
    drained(collector)
    assert len(stored(collector, lambda event: event["event"] == "sdk_event", 20)) == 20

    captured_spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=sdk_resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(captured_spans))
    tracer = tracer_provider.get_tracer("sdk")
    for index in range(5):
        with tracer.start_as_current_span("tagged", attributes={"phonoglyph.operation": "sdk_op", "i": index}):
            with tracer.start_as_current_span("child"):
                pass
    spans = captured_spans.get_finished_spans()
    request = encode_spans(spans)
    document = _hex_ids(json_format.MessageToDict(request, use_integers_for_enums=True))
    for body, headers in ((json.dumps(document).encode(), JSON), (request.SerializeToString(), PROTOBUF)):
        answer = post(collector, "/v1/traces", body, headers)
        assert answer.status_code == 200 and answer.content in (b"", b"{}")
    drained(collector)
    events = stored(collector, lambda event: event["event"] == "sdk_op_completed", 5)
    assert len(events) == 5  # the protobuf copy de-duplicated against the JSON one
    logger_provider.shutdown()
    tracer_provider.shutdown()


def _hex_ids(node):
    """protobuf's JSON mapping writes ids as base64; OTLP/JSON as hex."""
    if isinstance(node, dict):
        for key, item in node.items():
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(item, str):
                node[key] = base64.b64decode(item).hex()
            else:
                _hex_ids(item)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item)
    return node
