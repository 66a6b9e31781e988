import base64
import gzip
import json

import pytest
from google.protobuf import json_format

from collector.codecs.otlp import SIGNALS, CodecError, decode_request, encode_response, gunzip, status_body
from collector.processors.mapping import map_logs, map_traces
from tests.unit.collector.otlp_builders import logs, record, span, traces

TRACES = SIGNALS["/v1/traces"]
LOGS = SIGNALS["/v1/logs"]


def otlp_json(message) -> bytes:
    """OTLP/JSON as the spec writes it: camelCase, hex ids, int64 as strings, enums as ints."""
    document = json_format.MessageToDict(message, use_integers_for_enums=True)

    def hexify(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId"):
                    node[key] = base64.b64decode(value).hex()
                else:
                    hexify(value)
        elif isinstance(node, list):
            for item in node:
                hexify(item)

    hexify(document)
    return json.dumps(document).encode()


def test_json_and_protobuf_map_to_the_same_events():
    request = traces(
        span(
            {
                "phonoglyph.operation": "render",
                "user.id": "u",
                "n": 2**40,
                "ratio": 0.5,
                "ok": True,
                "raw": b"\x01\xff",
                "nested": {"a": [1, "x"]},
            },
            error=True,
        ),
        span({"http.route": "/x"}, span_id=b"\x02" * 8),
    )
    body = otlp_json(request)
    assert b'"5b8efff798038103d269b633813fc60c"' in body and b'"1099511627776"' in body and b'"code": 2' in body
    from_json = map_traces(decode_request(TRACES, body, is_json=True))
    from_proto = map_traces(decode_request(TRACES, request.SerializeToString(), is_json=False))
    assert from_json.events == from_proto.events
    assert from_json.events[0]["properties"]["raw"] == "01ff"
    assert from_json.events[0]["properties"]["nested"] == {"a": [1, "x"]}
    log_request = logs(record("file_uploaded", {"phonoglyph.event.id": "0b6f4b8e-2f3a-4c1d-9e8f-7a6b5c4d3e2f"}))
    assert map_logs(decode_request(LOGS, otlp_json(log_request), is_json=True)).events == map_logs(log_request).events


def test_json_unknown_fields_are_ignored_and_snake_case_is_accepted():
    body = json.dumps(
        {
            "resource_spans": [
                {
                    "scope_spans": [
                        {
                            "spans": [
                                {
                                    "trace_id": "5b8efff798038103d269b633813fc60c",
                                    "span_id": "eee19b7ec3c1b174",
                                    "name": "x",
                                    "start_time_unix_nano": 1,
                                    "end_time_unix_nano": "2",
                                    "futureField": {"x": 1},
                                    "attributes": [{"key": "phonoglyph.operation", "value": {"stringValue": "render"}}],
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    ).encode()
    events = map_traces(decode_request(TRACES, body, is_json=True)).events
    assert [event["event"] for event in events] == ["render_completed"]


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xff\xff",
        b"{",
        b"[]",
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
        b'{"resourceSpans": 3}',
    ],
)
def test_undecodable_bodies_are_400(body):
    is_json = body[:1] in (b"{", b"[")
    with pytest.raises(CodecError) as info:
        decode_request(TRACES, body, is_json=is_json)
    assert info.value.status == 400


def test_gunzip_members_limits_and_errors():
    data = b"x" * 10_000
    assert gunzip(gzip.compress(data), 10_000) == data
    assert gunzip(gzip.compress(data[:4000]) + gzip.compress(data[4000:]), 10_000) == data
    with pytest.raises(CodecError) as info:
        gunzip(gzip.compress(data), 9_999)
    assert info.value.status == 413
    for bad in (gzip.compress(data)[:-5], b"not gzip", gzip.compress(data) + b"junk"):
        with pytest.raises(CodecError) as info:
            gunzip(bad, 10_000)
        assert info.value.status == 400


def test_gunzip_stops_a_bomb_early():
    bomb = gzip.compress(b"\0" * (64 * 2**20))
    assert len(bomb) < 100_000
    with pytest.raises(CodecError) as info:
        gunzip(bomb, 2**20)
    assert info.value.status == 413


def test_status_body_is_a_google_rpc_status():
    from google.rpc.status_pb2 import Status

    status = Status.FromString(status_body(503, "storage unavailable " * 10, is_json=False))
    assert (status.code, status.message) == (14, "storage unavailable " * 10)
    assert json.loads(status_body(401, "no", is_json=True)) == {"code": 16, "message": "no"}


def test_status_body_with_a_long_message_has_a_multibyte_length():
    from google.rpc.status_pb2 import Status

    message = "x" * 20_000
    assert Status.FromString(status_body(429, message, is_json=False)).message == message


def test_partial_success_in_both_encodings():
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    body = encode_response(TRACES, rejected=2, error_message="bad ids", is_json=False)
    partial = ExportTraceServiceResponse.FromString(body).partial_success
    assert (partial.rejected_spans, partial.error_message) == (2, "bad ids")
    assert json.loads(encode_response(TRACES, rejected=2, error_message="bad ids", is_json=True)) == {
        "partialSuccess": {"rejectedSpans": "2", "errorMessage": "bad ids"}
    }
    assert encode_response(LOGS, is_json=False) == b""
    assert json.loads(encode_response(LOGS, is_json=True)) == {}
