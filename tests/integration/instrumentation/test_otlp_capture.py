"""The OTLP capture server itself: JSON and gzip decoding, strictness, 503 + Retry-After."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from tests.fakes.otlp import OtlpCapture

pytestmark = pytest.mark.integration

TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"


def _logs_request() -> ExportLogsServiceRequest:
    record = LogRecord(
        event_name="project_created",
        trace_id=bytes.fromhex(TRACE_ID),
        span_id=bytes.fromhex(SPAN_ID),
        attributes=[KeyValue(key="phonoglyph.project.id", value=AnyValue(string_value="p_1"))],
    )
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource={"attributes": [KeyValue(key="service.name", value=AnyValue(string_value="api"))]},
                scope_logs=[ScopeLogs(log_records=[record])],
            )
        ]
    )


def _otlp_json(request: ExportLogsServiceRequest) -> bytes:
    """OTLP/JSON: protobuf's JSON mapping, with trace and span ids as hex (not base64)."""
    document = MessageToDict(request)
    log_record = document["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    log_record["traceId"], log_record["spanId"] = TRACE_ID, SPAN_ID
    return json.dumps(document).encode()


EXPECTED = {
    "event_name": "project_created",
    "trace_id": TRACE_ID,
    "span_id": SPAN_ID,
    "attributes": {"phonoglyph.project.id": "p_1"},
    "body": None,
    "resource": {"service.name": "api"},
    "scope": "",
    "time_ns": 0,
}


@pytest.mark.parametrize("encoding", ["protobuf", "json", "json+gzip"])
def test_log_records_are_decoded_from_every_encoding(encoding: str, otlp: tuple[str, OtlpCapture]) -> None:
    endpoint, capture = otlp
    if encoding == "protobuf":
        body, headers = _logs_request().SerializeToString(), {"Content-Type": "application/x-protobuf"}
    else:
        body, headers = _otlp_json(_logs_request()), {"Content-Type": "application/json"}
    if encoding.endswith("gzip"):
        body, headers = gzip.compress(body), {**headers, "Content-Encoding": "gzip"}
    response = httpx.post(f"{endpoint}/v1/logs", content=body, headers=headers)
    assert response.status_code == 200
    assert capture.snapshot()["log_records"] == [EXPECTED]
    assert capture.snapshot()["errors"] == []


def test_unknown_paths_types_and_garbage_are_refused_and_recorded(otlp: tuple[str, OtlpCapture]) -> None:
    endpoint, capture = otlp
    assert httpx.post(f"{endpoint}/v1/nope", content=b"").status_code == 404
    assert httpx.post(f"{endpoint}/v1/logs", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    garbage = httpx.post(f"{endpoint}/v1/logs", content=b"{", headers={"Content-Type": "application/json"})
    assert garbage.status_code == 400
    assert len(capture.snapshot()["errors"]) == 3
    assert capture.snapshot()["log_records"] == []


def test_it_answers_503_with_retry_after_when_told(otlp: tuple[str, OtlpCapture]) -> None:
    endpoint, capture = otlp
    capture.answer_unavailable(times=1, retry_after_s=7)
    body, headers = _logs_request().SerializeToString(), {"Content-Type": "application/x-protobuf"}
    first = httpx.post(f"{endpoint}/v1/logs", content=body, headers=headers)
    assert (first.status_code, first.headers["Retry-After"]) == (503, "7")
    assert httpx.post(f"{endpoint}/v1/logs", content=body, headers=headers).status_code == 200
    assert len(capture.snapshot()["log_records"]) == 1
