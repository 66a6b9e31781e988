"""Every status path of the receiver, over real HTTP against ``python -m collector serve``."""

import gzip
import json
import socket
import sqlite3
import uuid

import httpx
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.integration.collector.collector_process import CollectorProcess, wait_for
from tests.unit.collector.otlp_builders import logs, record, span, traces

pytestmark = pytest.mark.integration

TOKEN = "status-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
PROTOBUF = {**AUTH, "content-type": "application/x-protobuf"}
JSON = {**AUTH, "content-type": "application/json"}
LIMITS = "limits: {max_request_bytes: 65536, max_decompressed_bytes: 1048576}\n"


def event_record_json(
    name: str, event_id: str, user: str = "json-user", time_unix_nano: int = 1_764_300_000_000_000_000
):
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-client"}}]},
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": str(time_unix_nano),
                                "eventName": name,
                                "severityNumber": 9,
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "attributes": [
                                    {"key": "phonoglyph.event.id", "value": {"stringValue": event_id}},
                                    {"key": "user.id", "value": {"stringValue": user}},
                                    {"key": "credits", "value": {"intValue": "25"}},
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    process = CollectorProcess(
        tmp_path_factory.mktemp("status"), env={"COLLECTOR_AUTH_TOKEN": TOKEN}, config_yaml=LIMITS
    )
    with process:
        yield process


def post(collector, path, body, headers):
    return httpx.post(f"{collector.url}{path}", content=body, headers=headers, timeout=30)


def test_health_ready_metrics(collector):
    assert httpx.get(f"{collector.url}/healthz").text == "ok\n"
    assert httpx.get(f"{collector.url}/readyz").status_code == 200
    metrics = httpx.get(f"{collector.url}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE phonoglyph_collector_outbox_depth gauge" in metrics.text
    assert httpx.get(f"{collector.url}/nope").status_code == 404
    assert httpx.get(f"{collector.url}/v1/traces").status_code == 405


def test_otlp_json_is_mapped_and_answered_in_json(collector):
    event_id = str(uuid.uuid4())
    response = post(collector, "/v1/logs", json.dumps(event_record_json("credits_purchased", event_id)), JSON)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    rows = wait_for(
        lambda: [
            e
            for e in json.loads(
                "["
                + ",".join(collector.cli("events", "--json", "--event", "credits_purchased").stdout.split("\n")[:-1])
                + "]"
            )
            if e["uuid"] == event_id
        ],
        message="the JSON event in the store",
    )
    assert rows[0]["properties"]["credits"] == 25
    assert rows[0]["distinct_id"] == "json-user"


def test_partial_success_in_json_and_protobuf(collector):
    document = event_record_json("file_uploaded", str(uuid.uuid4()))
    bad = json.loads(json.dumps(document["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]))
    bad["attributes"][0]["value"]["stringValue"] = "not-a-uuid"
    document["resourceLogs"][0]["scopeLogs"][0]["logRecords"].append(bad)
    response = post(collector, "/v1/logs", json.dumps(document), JSON)
    assert response.status_code == 200
    assert response.json() == {
        "partialSuccess": {"rejectedLogRecords": "1", "errorMessage": "phonoglyph.event.id is not a UUID"}
    }
    request = traces(
        span({"phonoglyph.operation": "render"}), span({"phonoglyph.operation": "render"}, span_id=b"\x01\x02")
    )
    response = post(collector, "/v1/traces", request.SerializeToString(), PROTOBUF)
    assert response.status_code == 200 and response.headers["content-type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert (answer.partial_success.rejected_spans, answer.partial_success.error_message) == (
        1,
        "invalid trace_id or span_id",
    )


def test_metrics_signal_is_accepted_and_counted(collector):
    body = {
        "resourceMetrics": [
            {
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "m",
                                "sum": {
                                    "dataPoints": [
                                        {"asInt": "3", "timeUnixNano": "1"},
                                        {"asInt": "4", "timeUnixNano": "2"},
                                    ]
                                },
                            }
                        ]
                    }
                ]
            }
        ]
    }
    before = collector.metric("received_metric_points_total")
    response = post(collector, "/v1/metrics", json.dumps(body), JSON)
    assert (response.status_code, response.json()) == (200, {})
    assert collector.metric("received_metric_points_total") == before + 2


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        (PROTOBUF, b"\xff\xff\xff\xff", 400),
        (JSON, b"{not json", 400),
        ({**PROTOBUF, "content-encoding": "gzip"}, b"\x1f\x8b\x08\x00garbage", 400),
        ({"content-type": "application/x-protobuf"}, b"", 401),
        ({"content-type": "application/x-protobuf", "authorization": "Bearer wrong"}, b"", 401),
        ({**AUTH, "content-type": "text/plain"}, b"hello", 415),
        ({**PROTOBUF, "content-encoding": "br"}, b"", 415),
        (PROTOBUF, b"\x00" * 70_000, 413),
    ],
)
def test_error_statuses_answer_a_google_rpc_status(collector, headers, body, status):
    before = collector.metric("rejected_requests_total", status=str(status))
    response = post(collector, "/v1/traces", body, headers)
    assert response.status_code == status
    if headers.get("content-type") == "application/json":
        assert set(response.json()) == {"code", "message"}
    else:
        assert Status.FromString(response.content).message
    assert collector.metric("rejected_requests_total", status=str(status)) == before + 1


def test_a_gzip_bomb_is_413_and_stopped_early(collector):
    bomb = gzip.compress(b"\0" * (60 * 2**20), 9)
    assert len(bomb) < 65536
    rss_before_kb = collector.rss_kb()
    response = post(collector, "/v1/traces", bomb, {**PROTOBUF, "content-encoding": "gzip"})
    assert response.status_code == 413
    assert "decompressed body over 1048576 bytes" in Status.FromString(response.content).message
    assert collector.rss_kb() - rss_before_kb < 24 * 1024  # far below the 60 MiB it would inflate to


def test_chunked_body_over_the_limit_is_413(collector):
    def chunks():
        for _ in range(20):
            yield b"\x00" * 8192

    response = httpx.post(f"{collector.url}/v1/traces", content=chunks(), headers=PROTOBUF, timeout=30)
    assert response.status_code == 413


def test_a_body_that_trickles_past_the_deadline_is_408(tmp_path):
    with CollectorProcess(tmp_path, config_yaml="limits: {body_timeout_s: 1}\n") as c:
        host, port = c.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=20) as sock:
            sock.sendall(
                b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n"
                b"content-length: 100\r\n\r\n" + b"\x00" * 10
            )  # 90 bytes never come
            answer = b""
            while b"\r\n\r\n" not in answer:
                data = sock.recv(4096)
                if not data:
                    break
                answer += data
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert c.metric("rejected_requests_total", status="408") == 1
        # the collector still serves everyone else
        assert httpx.get(f"{c.url}/readyz").status_code == 200


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_outbox_full_is_429_with_retry_after(tmp_path):
    env = {"POSTHOG_API_KEY": "phc_test", "POSTHOG_HOST": f"http://127.0.0.1:{_closed_port()}"}
    with CollectorProcess(
        tmp_path, env=env, config_yaml="limits: {outbox_max_bytes: 3000, retry_after_s: 7}\ndrain_timeout_s: 1\n"
    ) as c:
        statuses = []
        for index in range(20):
            body = logs(record("file_uploaded", {"phonoglyph.event.id": str(uuid.uuid4()), "user.id": f"u{index}"}))
            response = post(c, "/v1/logs", body.SerializeToString(), {"content-type": "application/x-protobuf"})
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.headers["retry-after"] == "7"
                assert "outbox full" in Status.FromString(response.content).message
                break
        assert statuses[0] == 200 and statuses[-1] == 429, statuses
        assert c.metric("rejected_requests_total", status="429") == 1


def test_storage_trouble_is_503_with_retry_after(tmp_path):
    with CollectorProcess(tmp_path) as c:
        blocker = sqlite3.connect(c.data_dir / "outbox.db", timeout=10)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            body = logs(record("file_uploaded", {"phonoglyph.event.id": str(uuid.uuid4())}))
            response = post(c, "/v1/logs", body.SerializeToString(), {"content-type": "application/x-protobuf"})
        finally:
            blocker.rollback()
            blocker.close()
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert Status.FromString(response.content).code == 14  # UNAVAILABLE
        retry = post(c, "/v1/logs", body.SerializeToString(), {"content-type": "application/x-protobuf"})
        assert retry.status_code == 200
