import base64
import gzip
import json

import pytest
from google.protobuf import json_format

from collector.codecs import otlp as otlp_codec
from collector.codecs.otlp import SIGNALS, CodecError, decode, decode_request, encode_response, gunzip, status_body
from collector.processors.mapping import map_logs, map_traces
from tests.unit.collector.otlp_builders import SPAN_ID, TRACE_ID, logs, record, span, traces

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


TAGGED = {"phonoglyph.operation": "render", "user.id": "u"}
METRICS = SIGNALS["/v1/metrics"]


def json_spans(*spans: dict, resource: dict | None = None, **extra) -> bytes:
    entry = {"scopeSpans": [{"scope": {"name": "s"}, "spans": list(spans)}]}
    if resource is not None:
        entry["resource"] = resource
    return with_deep_values(json.dumps({"resourceSpans": [entry], **extra}).encode())


def json_span(span_id: str, attributes: dict | None = None, **fields) -> dict:
    attrs = [{"key": key, "value": {"stringValue": value}} for key, value in (attributes or {}).items()]
    return {
        "traceId": TRACE_ID.hex(),
        "spanId": span_id,
        "name": "op",
        "startTimeUnixNano": "1764300000000000000",
        "endTimeUnixNano": "1764300001000000000",
        "attributes": attrs,
        **fields,
    }


DEEP = "@deep@"


def deep_value(levels: int) -> str:
    """A placeholder for an AnyValue of ``levels`` nested maps (json.dumps cannot write one that deep)."""
    return f"{DEEP}{levels}"


def with_deep_values(body: bytes) -> bytes:
    """``body`` with each ``deep_value`` placeholder replaced by its nested maps."""
    parts = body.split(f'"{DEEP}'.encode())
    out = [parts[0]]
    for part in parts[1:]:
        levels, rest = part.split(b'"', 1)
        n = int(levels)
        out.append(b'{"kvlistValue": {"values": [{"key": "k", "value": ' * n + b'{"stringValue": "bottom"}')
        out.append(b"}]}}" * n + rest)
    return b"".join(out)


@pytest.mark.parametrize("is_json", [True, False])
@pytest.mark.parametrize("body", [b"", b"  \n"])
def test_an_empty_body_is_an_empty_request(body, is_json):
    if not is_json:
        body = b""  # whitespace is JSON's empty document only
    decoded = decode(TRACES, body, is_json=is_json)
    assert decoded.request == TRACES.request_type() and decoded.rejected == 0
    assert decode(LOGS, b"{}", is_json=True).request == LOGS.request_type()


def test_json_id_like_keys_outside_the_id_fields_are_unknown_fields_and_ignored():
    body = json_spans(
        json_span(
            "eee19b7ec3c1b174",
            TAGGED,
            futureField={"traceId": "not hex", "spanId": [1, 2]},
            events=[{"name": "e", "timeUnixNano": "1", "spanId": "zz", "extra": {"traceId": "zz"}}],
        ),
        resource={"attributes": [], "traceId": "zz", "spanId": {"x": 1}},
        futureTop={"traceId": "zz"},
    )
    decoded = decode(TRACES, body, is_json=True)
    assert decoded.rejected == 0, decoded.error_message
    assert [event["event"] for event in map_traces(decoded.request).events] == ["render_completed"]


def test_json_ids_are_converted_in_links_log_records_and_exemplars():
    link = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"}
    request = decode_request(TRACES, json_spans(json_span("eee19b7ec3c1b174", links=[link])), is_json=True)
    converted = request.resource_spans[0].scope_spans[0].spans[0].links[0]
    assert (converted.trace_id.hex(), converted.span_id.hex()) == (link["traceId"], link["spanId"])
    log_body = {
        "resourceLogs": [
            {"scopeLogs": [{"logRecords": [{"traceId": TRACE_ID.hex().upper(), "spanId": SPAN_ID.hex().upper()}]}]}
        ]
    }
    record_ = decode_request(LOGS, json.dumps(log_body).encode(), is_json=True).resource_logs[0].scope_logs[0]
    assert (record_.log_records[0].trace_id, record_.log_records[0].span_id) == (TRACE_ID, SPAN_ID)
    metric = {
        "name": "m",
        "sum": {"dataPoints": [{"asInt": "1", "exemplars": [{"asInt": "1", **link}]}]},
    }
    metrics_body = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]}
    decoded = decode_request(METRICS, json.dumps(metrics_body).encode(), is_json=True)
    exemplar = decoded.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0].exemplars[0]
    assert exemplar.trace_id.hex() == link["traceId"]


def test_a_bad_json_id_rejects_its_span_alone():
    body = json_spans(json_span("zz", TAGGED), json_span("eee19b7ec3c1b174", TAGGED))
    decoded = decode(TRACES, body, is_json=True)
    assert decoded.rejected == 1 and "spanId is not hex" in decoded.error_message
    assert len(map_traces(decoded.request).events) == 1


@pytest.mark.parametrize("levels", [40, 300])  # over protobuf's JSON depth limit; over json.loads's own
def test_an_over_deep_json_value_rejects_its_item_alone(levels):
    deep = json_span("eee19b7ec3c1b174")
    deep["attributes"] = [{"key": "deep", "value": deep_value(levels)}]
    body = json_spans(deep, json_span("eee19b7ec3c1b175", TAGGED), json_span("eee19b7ec3c1b176"))
    decoded = decode(TRACES, body, is_json=True)
    assert decoded.rejected == 1 and decoded.error_message.startswith("a span that does not decode")
    result = map_traces(decoded.request)
    assert (result.received, len(result.events)) == (2, 1)


@pytest.mark.parametrize("levels", [40, 300])
def test_an_over_deep_json_resource_rejects_its_items(levels):
    resource = {"attributes": [{"key": "deep", "value": deep_value(levels)}]}
    entry = json.loads(json_spans(json_span("eee19b7ec3c1b174", TAGGED), json_span("eee19b7ec3c1b175")))
    entry["resourceSpans"][0]["resource"] = resource
    entry["resourceSpans"].append(json.loads(json_spans(json_span("eee19b7ec3c1b176", TAGGED)))["resourceSpans"][0])
    decoded = decode(TRACES, with_deep_values(json.dumps(entry).encode()), is_json=True)
    assert decoded.rejected == 2 and "resource" in decoded.error_message
    assert len(map_traces(decoded.request).events) == 1


def test_json_too_deep_outside_any_item_is_400():
    body = b'{"futureField": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(CodecError) as info:
        decode(TRACES, body, is_json=True)
    assert info.value.status == 400


def ld(field_number: int, payload: bytes) -> bytes:
    return bytes([field_number << 3 | 2]) + otlp_codec.encode_varint(len(payload)) + payload


def deep_attribute(levels: int) -> bytes:
    """A KeyValue holding ``levels`` nested maps, by hand (protobuf cannot build one over its depth limit)."""
    value = ld(1, b"bottom")  # AnyValue.string_value
    for _ in range(levels):
        value = ld(6, ld(1, ld(1, b"k") + ld(2, value)))  # AnyValue.kvlist_value.values[0]
    return ld(1, b"deep") + ld(2, value)


def deep_span(span_id: bytes) -> bytes:
    return span(TAGGED, span_id=span_id).SerializeToString() + ld(9, deep_attribute(60))  # Span.attributes


def raw_traces(*spans: bytes, resource: bytes = b"") -> bytes:
    """An ExportTraceServiceRequest with one resource entry and one scope, from span bytes."""
    scope = ld(1, b"") + b"".join(ld(2, item) for item in spans)
    return ld(1, ld(1, resource) + ld(2, scope))


def test_an_over_deep_protobuf_value_rejects_its_span_alone_and_the_fast_path_still_maps():
    spans = (span(TAGGED, span_id=b"\x01" * 8).SerializeToString(), span({}, span_id=b"\x03" * 8).SerializeToString())
    body = raw_traces(spans[0], deep_span(b"\x02" * 8), spans[1])
    with pytest.raises(Exception):  # noqa: B017 - what a whole-request parse does with it
        TRACES.request_type.FromString(body)
    decoded = decode(TRACES, body, is_json=False)
    assert decoded.rejected == 1 and "span that does not decode" in decoded.error_message
    assert decoded.raw_body is not None and len(decoded.raw_body) < len(body)
    result = map_traces(decoded.request, raw_body=decoded.raw_body)
    assert (result.received, len(result.events), result.ignored) == (2, 1, 1)


def test_an_over_deep_protobuf_resource_rejects_its_spans():
    spans = (span(TAGGED, span_id=b"\x01" * 8).SerializeToString(), span({}, span_id=b"\x03" * 8).SerializeToString())
    body = (
        raw_traces(*spans, resource=ld(1, deep_attribute(60)))
        + traces(span(TAGGED, span_id=b"\x04" * 8)).SerializeToString()
    )
    decoded = decode(TRACES, body, is_json=False)
    assert decoded.rejected == 2 and "resource" in decoded.error_message
    assert len(map_traces(decoded.request, raw_body=decoded.raw_body).events) == 1


@pytest.mark.parametrize("is_json", [True, False])
def test_decoding_work_grows_linearly_with_the_items(monkeypatch, is_json):
    """Timing-free: the fallback paths visit each item a bounded number of times."""
    counts = {"parse": 0, "fields": 0}
    parse_dict, fields = otlp_codec.json_format.ParseDict, otlp_codec.fields

    def counting_parse(*args, **kwargs):
        counts["parse"] += 1
        return parse_dict(*args, **kwargs)

    def counting_fields(*args):
        for field in fields(*args):
            counts["fields"] += 1
            yield field

    monkeypatch.setattr(otlp_codec.json_format, "ParseDict", counting_parse)
    monkeypatch.setattr(otlp_codec, "fields", counting_fields)

    def work(n: int) -> int:
        counts.update(parse=0, fields=0)
        if is_json:
            spans = [json_span(f"{i + 1:016x}", {"a": "x" * 10}) for i in range(n)]
            spans[0]["attributes"] = [{"key": "deep", "value": deep_value(300)}]
            decoded = decode(TRACES, json_spans(*spans), is_json=True)
        else:
            spans = [span({"a": "x" * 10}, span_id=(i + 1).to_bytes(8, "big")).SerializeToString() for i in range(n)]
            decoded = decode(TRACES, raw_traces(deep_span(b"\xff" * 8), *spans), is_json=False)
        assert decoded.rejected == 1
        return counts["parse"] + counts["fields"]

    small, large = work(50), work(400)
    assert large <= 8 * small + 8


@pytest.mark.parametrize("opening, closing", [(b"[", b"]"), (b'[ {"a": ', b"} ] ")])
def test_runs_of_brackets_deeper_than_json_takes_reject_their_item_alone(opening, closing):
    body = json_spans(json_span("0000000000000001", TAGGED, futureField="@x@"), json_span("0000000000000002", TAGGED))
    deep = opening * 5000 + b"1" + closing * 5000
    decoded = decode(TRACES, body.replace(b'"@x@"', deep), is_json=True)
    assert decoded.rejected == 1
    assert [event["properties"]["span_id"] for event in map_traces(decoded.request).events] == ["0000000000000002"]


def test_a_sent_string_never_passes_for_a_cut_out_item():
    body = json_spans(json_span("0000000000000001", TAGGED)).replace(
        b'"spans": [', b'"spans": ["\\u0000phonoglyph.too-deep:' + b"9" * 5000 + b'", '
    )
    decoded = decode(TRACES, body, is_json=True)
    assert decoded.rejected == 1 and "not a JSON object" in decoded.error_message


def test_a_repeated_attribute_key_maps_the_same_from_json_and_protobuf():
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    tagged = span({"phonoglyph.operation": "render", "plan": "pro"})
    tagged.attributes.extend(
        [
            KeyValue(key="phonoglyph.operation", value=AnyValue(string_value="export")),
            KeyValue(key="plan", value=AnyValue(string_value="free")),
        ]
    )
    request = traces(tagged)
    body = request.SerializeToString()
    from_proto = map_traces(decode_request(TRACES, body, is_json=False), raw_body=body).events
    from_json = map_traces(decode_request(TRACES, otlp_json(request), is_json=True)).events
    assert from_json == from_proto
    assert (from_json[0]["event"], from_json[0]["properties"]["plan"]) == ("render_completed", "pro")
