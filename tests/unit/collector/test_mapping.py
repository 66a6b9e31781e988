import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

import collector.processors.mapping as mapping
from collector.processors.mapping import MappingRules, count_metric_points, map_logs, map_traces
from tests.unit.collector.otlp_builders import SPAN_ID, T0, TRACE_ID, logs, record, span, traces

TRACE = TRACE_ID.hex()
SPAN = SPAN_ID.hex()
EVENT_ID = "0b6f4b8e-2f3a-4c1d-9e8f-7a6b5c4d3e2f"


def test_tagged_span_becomes_completed_event_with_identity_and_duration():
    request = traces(
        span(
            {
                "phonoglyph.operation": "stem_separation",
                "phonoglyph.outcome": "completed",
                "user.id": "user-42",
                "session.id": "sess-1",
                "phonoglyph.file.id": "file-9",
                "audio.duration_s": 31.5,
                "audio.channels": 2,
                "tags": ["a", "b"],
            }
        )
    )
    result = map_traces(request)
    assert (result.received, result.rejected, result.ignored) == (1, 0, 0)
    assert result.events == [
        {
            "event": "stem_separation_completed",
            "distinct_id": "user-42",
            "properties": {
                "phonoglyph.file.id": "file-9",
                "audio.duration_s": 31.5,
                "audio.channels": 2,
                "tags": ["a", "b"],
                "processing_time_ms": 1500.0,
                "trace_id": TRACE,
                "span_id": SPAN,
                "service.name": "api",
                "deployment.environment": "test",
                "$ignore_sent_at": True,
                "$session_id": "sess-1",
            },
            "timestamp": "2025-11-28T03:20:01.500000Z",
            "uuid": "ee0f8864-61b9-5b16-b2af-1ecbb99ee591",
        }
    ]


def test_uuid_is_uuid5_of_trace_span_and_event_name():
    event = map_traces(traces(span({"phonoglyph.operation": "render", "user.id": "u"}))).events[0]
    assert event["uuid"] == mapping.span_event_uuid(TRACE, SPAN, "render_completed")
    import uuid

    assert event["uuid"] == str(uuid.uuid5(mapping.UUID_NAMESPACE, f"{TRACE}:{SPAN}:render_completed"))


@pytest.mark.parametrize(
    ("attrs", "error", "error_type"),
    [
        ({"phonoglyph.outcome": "failed", "error.type": "DecodeError"}, False, "DecodeError"),
        ({"error.type": "TimeoutError"}, True, "TimeoutError"),
        ({}, True, "_OTHER"),
    ],
)
def test_failed_span_by_outcome_or_status(attrs, error, error_type):
    event = map_traces(traces(span({"phonoglyph.operation": "render", "user.id": "u", **attrs}, error=error))).events[0]
    assert event["event"] == "render_failed"
    assert event["properties"]["error_type"] == error_type
    assert event["uuid"] == mapping.span_event_uuid(TRACE, SPAN, "render_failed")


@pytest.mark.parametrize("raw", [False, True])
def test_an_abandoned_operation_maps_to_no_event(raw):
    """Another attempt owns its work and reports the outcome (instrumentation's OperationAbandoned)."""
    request = traces(span({"phonoglyph.operation": "stem_separation", "phonoglyph.outcome": "abandoned"}))
    result = map_traces(request, raw_body=request.SerializeToString() if raw else None)
    assert (result.received, result.rejected, result.ignored, result.events) == (1, 0, 1, [])


def test_outcome_attribute_wins_over_status():
    event = map_traces(
        traces(span({"phonoglyph.operation": "render", "phonoglyph.outcome": "completed"}, error=True))
    ).events[0]
    assert event["event"] == "render_completed"
    assert "error_type" not in event["properties"]


def test_guest_keeps_its_id_and_is_flagged():
    event = map_traces(
        traces(span({"phonoglyph.operation": "render", "user.id": "guest-7", "phonoglyph.user.guest": True}))
    ).events[0]
    assert event["distinct_id"] == "guest-7"
    assert event["properties"]["is_guest"] is True
    assert "$process_person_profile" not in event["properties"]


@pytest.mark.parametrize(
    ("attrs", "distinct_id"),
    [({"session.id": "s-1"}, "session:s-1"), ({}, f"trace:{TRACE}")],
)
def test_no_identity_gives_a_person_less_event(attrs, distinct_id):
    event = map_traces(traces(span({"phonoglyph.operation": "render", **attrs}))).events[0]
    assert event["distinct_id"] == distinct_id
    assert event["properties"]["$process_person_profile"] is False


def test_event_record_keeps_its_id_and_time():
    request = logs(
        record(
            "project_created",
            {
                "phonoglyph.event.id": EVENT_ID,
                "user.id": "user-42",
                "session.id": "sess-1",
                "phonoglyph.project.id": "proj-1",
            },
            time=T0 + 123_456_789,
        )
    )
    result = map_logs(request)
    assert result.events == [
        {
            "event": "project_created",
            "distinct_id": "user-42",
            "properties": {
                "phonoglyph.project.id": "proj-1",
                "trace_id": TRACE,
                "span_id": SPAN,
                "service.name": "api",
                "deployment.environment": "test",
                "$ignore_sent_at": True,
                "$session_id": "sess-1",
            },
            "timestamp": "2025-11-28T03:20:00.123456Z",
            "uuid": EVENT_ID,
        }
    ]


def test_started_record_without_trace_context_is_person_less_by_uuid():
    request = logs(
        record(
            "render_started",
            {"phonoglyph.event.id": EVENT_ID.upper(), "phonoglyph.operation": "render"},
            trace_id=b"",
            span_id=b"",
        )
    )
    event = map_logs(request).events[0]
    assert event["event"] == "render_started"
    assert event["uuid"] == EVENT_ID
    assert event["distinct_id"] == f"event:{EVENT_ID}"
    assert "trace_id" not in event["properties"]
    assert event["properties"]["$process_person_profile"] is False


@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_outcome_record_of_an_unsampled_span_equals_the_span_event(outcome):
    common = {
        "phonoglyph.operation": "audio_analysis",
        "phonoglyph.outcome": outcome,
        "user.id": "u-1",
        "session.id": "s-1",
        "phonoglyph.file.id": "f-1",
        "audio.sample_rate_hz": 44100,
    }
    if outcome == "failed":
        common["error.type"] = "ValueError"
    from_span = map_traces(traces(span(common, start=T0, end=T0 + 2_000_000_000))).events
    from_record = map_logs(
        logs(
            record(
                f"audio_analysis_{outcome}",
                {**common, "phonoglyph.operation.duration_ms": 2000.0, "phonoglyph.event.id": EVENT_ID},
                time=T0 + 2_000_000_000,
            )
        )
    ).events
    assert from_record == from_span
    assert from_span[0]["event"] == f"audio_analysis_{outcome}"


def test_plain_log_records_are_ignored_and_event_name_attribute_is_honoured():
    request = logs(
        record("", {"message": "hello"}), record("", {"event.name": "file_uploaded", "phonoglyph.event.id": EVENT_ID})
    )
    result = map_logs(request)
    assert (result.received, result.ignored, result.rejected) == (2, 1, 0)
    assert [event["event"] for event in result.events] == ["file_uploaded"]
    assert "event.name" not in result.events[0]["properties"]


def test_record_without_event_id_gets_a_deterministic_uuid():
    request = logs(record("credits_purchased", {"user.id": "u"}))
    assert map_logs(request).events[0]["uuid"] == map_logs(request).events[0]["uuid"]


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (span({"phonoglyph.operation": "render"}, trace_id=b"\x00" * 16), "invalid trace_id or span_id"),
        (span({"phonoglyph.operation": "render"}, span_id=b"\x01\x02"), "invalid trace_id or span_id"),
        (span({"phonoglyph.operation": "render"}, start=T0, end=T0 - 1), "span end time missing or before its start"),
        (span({"phonoglyph.operation": ""}), "empty phonoglyph.operation"),
    ],
)
def test_unmappable_spans_are_rejected_with_a_reason(item, reason):
    good = span({"phonoglyph.operation": "render"}, span_id=b"\x09" * 8)
    result = map_traces(traces(good, item, span({"http.route": "/x"}, span_id=b"\x0a" * 8)))
    assert (result.received, len(result.events), result.rejected, result.ignored) == (3, 1, 1, 1)
    assert result.error_message == reason


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({"phonoglyph.event.id": "not-a-uuid"}, "phonoglyph.event.id is not a UUID"),
        (
            {"phonoglyph.operation": "render", "phonoglyph.outcome": "completed"},
            "outcome event record without a numeric phonoglyph.operation.duration_ms",
        ),
    ],
)
def test_unmappable_records_are_rejected_with_a_reason(attrs, reason):
    name = "render_completed" if "phonoglyph.operation" in attrs else "file_uploaded"
    result = map_logs(logs(record(name, attrs), record("file_uploaded", {"phonoglyph.event.id": EVENT_ID})))
    assert (len(result.events), result.rejected, result.error_message) == (1, 1, reason)


def test_rules_rename_drop_allow_and_opt_spans_in():
    rules = MappingRules(
        rename_events={"render_completed": "video_rendered", "api_call_completed": "api_called"},
        drop_properties=frozenset({"audio.channels"}),
        span_names={"POST /api/projects": "project_api"},
        http_routes={"/api/renders/{id}": "api_call"},
    )
    request = traces(
        span({"phonoglyph.operation": "render", "audio.channels": 2, "file.size": 10}, span_id=b"\x01" * 8),
        span({"http.route": "/api/renders/{id}", "http.response.status_code": 200}, span_id=b"\x02" * 8),
        span({"http.route": "/health"}, name="POST /api/projects", span_id=b"\x03" * 8),
        span({"http.route": "/health"}, name="GET /health", span_id=b"\x04" * 8),
    )
    events = map_traces(request, rules).events
    assert [event["event"] for event in events] == ["video_rendered", "api_called", "project_api_completed"]
    assert events[0]["properties"]["file.size"] == 10 and "audio.channels" not in events[0]["properties"]
    # a rename never changes the uuid
    assert events[0]["uuid"] == mapping.span_event_uuid(TRACE, "01" * 8, "render_completed")
    allow = MappingRules(allow_properties=frozenset({"file.size"}))
    properties = map_traces(request, allow).events[0]["properties"]
    assert properties["file.size"] == 10 and "audio.channels" not in properties
    assert properties["trace_id"] == TRACE  # fixed properties always pass


def test_untagged_spans_build_no_dicts(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the untagged fast path must not build attribute values")

    monkeypatch.setattr(mapping, "_split_attributes", forbidden)
    monkeypatch.setattr(mapping, "any_value", forbidden)
    monkeypatch.setattr(mapping, "_resource_properties", forbidden)
    request = traces(
        *(span({"http.route": "/x", "user.id": "u", "k": i}, span_id=bytes([i + 1]) * 8) for i in range(50))
    )
    result = map_traces(request)
    assert (result.received, result.ignored, result.events) == (50, 50, [])


def test_a_body_without_the_tag_bytes_is_not_scanned(monkeypatch):
    calls = []
    monkeypatch.setattr(mapping, "_tagged_operation", lambda span, rules: calls.append(span))
    request = traces(span({"http.route": "/x"}), span({"http.route": "/y"}, span_id=b"\x05" * 8))
    result = map_traces(request, raw_body=request.SerializeToString())
    assert (result.received, result.ignored, calls) == (2, 2, [])
    map_traces(request, raw_body=request.SerializeToString() + b"phonoglyph.operation")
    assert len(calls) == 2


def test_metric_points_are_counted():
    request = ExportMetricsServiceRequest()
    metrics = request.resource_metrics.add().scope_metrics.add().metrics
    gauge = metrics.add(name="g")
    gauge.gauge.data_points.add(as_double=1.0)
    total = metrics.add(name="s")
    total.sum.data_points.add(as_int=1)
    total.sum.data_points.add(as_int=2)
    metrics.add(name="h").histogram.data_points.add(count=3)
    result = count_metric_points(request)
    assert (result.received, result.ignored, result.events) == (4, 4, [])


def test_non_string_operation_on_a_record_is_an_ordinary_event():
    result = map_logs(logs(record("x_completed", {"phonoglyph.operation": 3, "phonoglyph.event.id": EVENT_ID})))
    assert [event["event"] for event in result.events] == ["x_completed"]


def test_non_finite_doubles_become_strings():
    event = map_traces(traces(span({"phonoglyph.operation": "render", "a": float("nan"), "b": float("inf")}))).events[0]
    assert (event["properties"]["a"], event["properties"]["b"]) == ("nan", "inf")


def test_fast_path_equals_the_full_scan_across_resources_scopes_and_sizes():
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    index = 0
    for resource_index in range(2):
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(
            traces(resource={"service.name": f"svc-{resource_index}"}).resource_spans[0].resource.attributes
        )
        for _ in range(2):
            scope = resource_spans.scope_spans.add()
            for size in (0, 200, 20_000, 3):  # one-, two- and three-byte lengths
                index += 1
                attrs = {"blob": "x" * size, "user.id": f"u{index}"}
                if index % 3 == 0:
                    attrs["phonoglyph.operation"] = "render"
                elif index % 3 == 1:
                    attrs["note"] = "phonoglyph.operation"  # the tag's bytes as a value: not tagged
                scope.spans.append(span(attrs, span_id=index.to_bytes(8, "big")))
    raw = request.SerializeToString()
    fast = map_traces(request, raw_body=raw)
    full = map_traces(request)  # no raw body: the full scan
    assert (fast.received, fast.ignored, fast.rejected) == (full.received, full.ignored, full.rejected) == (16, 11, 0)
    assert fast.events == full.events and len(fast.events) == 5
    assert {event["properties"]["service.name"] for event in fast.events} == {"svc-0", "svc-1"}


def test_the_mapping_processor_fills_the_batch():
    from collector.pipeline import Batch
    from collector.processors.mapping import MappingProcessor

    request = traces(
        span({"phonoglyph.operation": "render"}),
        span({}, span_id=b"\x02" * 8),
        span({"phonoglyph.operation": "x"}, span_id=b"\0" * 8),
    )
    batch = Batch("traces", request, request.SerializeToString())
    MappingProcessor().process(batch)
    assert [event["event"] for event in batch.events] == ["render_completed"]
    assert (batch.received, batch.rejected, batch.ignored, batch.ignored_reason) == (3, 1, 1, "untagged_span")
    assert batch.error_message == "invalid trace_id or span_id"
    metrics_batch = Batch("metrics", ExportMetricsServiceRequest())
    MappingProcessor().process(metrics_batch)
    assert (metrics_batch.events, metrics_batch.ignored_reason) == ([], "metric_point")


def test_records_without_event_id_differing_in_anything_get_different_uuids():
    """Foreign SDKs name no phonoglyph.event.id: 20 records of one span at one time are 20 events."""
    base = record("browser.page_view", {"user.id": "u"})
    variants = []
    for index in range(20):
        item = record("browser.page_view", {"user.id": f"user-{index}"})
        variants.append(item)
    body_variant = record("browser.page_view", {"user.id": "u"})
    body_variant.body.string_value = "other body"
    severity_variant = record("browser.page_view", {"user.id": "u"})
    severity_variant.severity_number = 17
    observed_variant = record("browser.page_view", {"user.id": "u"})
    observed_variant.observed_time_unix_nano += 1
    variants += [base, body_variant, severity_variant, observed_variant]
    events = map_logs(logs(*variants)).events
    assert len({event["uuid"] for event in events}) == len(variants) == 24
    # resource and scope are part of the content too
    other_resource = map_logs(logs(base, resource={"service.name": "web"})).events[0]
    assert other_resource["uuid"] != events[20]["uuid"]
    scoped = logs(base)
    scoped.resource_logs[0].scope_logs[0].scope.name = "browser"
    assert map_logs(scoped).events[0]["uuid"] != events[20]["uuid"]


def test_a_resent_record_keeps_its_content_uuid_whatever_the_encoding_or_field_order():
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    request = logs(record("browser.page_view", {"user.id": "u", "n": [1, {"k": "v"}]}))
    first = map_logs(request).events[0]["uuid"]
    resent = ExportLogsServiceRequest.FromString(request.SerializeToString())
    assert map_logs(resent).events[0]["uuid"] == first
    # the same record with its fields written in another order on the wire
    log_record = request.resource_logs[0].scope_logs[0].log_records[0]
    fields = sorted(log_record.ListFields(), key=lambda pair: -pair[0].number)
    reordered = b"".join(type(log_record)(**{field.name: value}).SerializeToString() for field, value in fields)
    assert mapping.record_content_uuid(type(log_record).FromString(reordered)) == mapping.record_content_uuid(
        log_record
    )


def test_records_with_an_event_id_and_outcome_records_keep_their_uuids():
    assert map_logs(logs(record("file_uploaded", {"phonoglyph.event.id": EVENT_ID}))).events[0]["uuid"] == EVENT_ID
    outcome = record(
        "render_completed", {"phonoglyph.operation": "render", "phonoglyph.operation.duration_ms": 5, "x": "y"}
    )
    assert map_logs(logs(outcome)).events[0]["uuid"] == mapping.span_event_uuid(TRACE, SPAN, "render_completed")


def test_a_repeated_attribute_key_maps_its_first_value_on_both_paths():
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    tagged = span({"phonoglyph.operation": "render", "plan": "pro"})
    tagged.attributes.extend(
        [
            KeyValue(key="phonoglyph.operation", value=AnyValue(string_value="export")),
            KeyValue(key="plan", value=AnyValue(string_value="free")),
        ]
    )
    request = traces(tagged)
    fast = map_traces(request, raw_body=request.SerializeToString()).events
    scan = map_traces(request).events
    assert fast == scan
    assert (fast[0]["event"], fast[0]["properties"]["plan"]) == ("render_completed", "pro")


REQUEST_DUMP = {
    "http.url": "https://app.example/api/x?email=a%40b.c",
    "url.full": "https://app.example/api/x?token=abc",
    "http.target": "/api/x?email=a%40b.c",
    "url.path": "/api/users/a@b.c",
    "url.query": "email=a%40b.c",
    "http.user_agent": "Mozilla/5.0",
    "user_agent.original": "Mozilla/5.0",
    "client.address": "203.0.113.9",
    "net.peer.ip": "203.0.113.9",
    "http.request.header.x_forwarded_for": ["203.0.113.9"],
    "http.response.header.set_cookie": ["sid=1"],
    "db.statement": "SELECT 1",
}
OPERATION_ATTRIBUTES = {
    "http.route": "/api/x",
    "http.request.method": "POST",
    "http.response.status_code": 201,
    "audio.duration_s": 1.5,
}


def test_request_dumps_are_left_out_of_properties_by_default():
    request = traces(span({"phonoglyph.operation": "render", "user.id": "u", **REQUEST_DUMP, **OPERATION_ATTRIBUTES}))
    properties = map_traces(request).events[0]["properties"]
    assert not set(REQUEST_DUMP) & set(properties)
    assert {key: properties[key] for key in OPERATION_ATTRIBUTES} == OPERATION_ATTRIBUTES
    record_properties = map_logs(logs(record("file_uploaded", {"phonoglyph.event.id": EVENT_ID, **REQUEST_DUMP})))
    assert not set(REQUEST_DUMP) & set(record_properties.events[0]["properties"])


def test_request_attributes_can_be_kept_all_or_by_name():
    request = traces(span({"phonoglyph.operation": "render", **REQUEST_DUMP}))
    everything = map_traces(request, MappingRules(keep_request_attributes=True)).events[0]["properties"]
    assert set(REQUEST_DUMP) <= set(everything)
    named = map_traces(request, MappingRules(keep_request_attributes=frozenset({"http.user_agent"}))).events[0]
    assert set(REQUEST_DUMP) & set(named["properties"]) == {"http.user_agent"}


def test_an_event_too_large_once_mapped_is_rejected_not_dead_lettered_later():
    from collector.events import encode_event

    many = {f"attribute.{index}": "v" * 4000 for index in range(200)}  # 800 KB of properties
    request = traces(
        span({"phonoglyph.operation": "render", **many}),
        span({"phonoglyph.operation": "render", "a": "b"}, span_id=b"\x02" * 8),
    )
    result = map_traces(request, raw_body=request.SerializeToString())
    assert (len(result.events), result.rejected) == (1, 1)
    assert result.error_message == f"event over {mapping.MAX_EVENT_BYTES} bytes once mapped"
    record_result = map_logs(logs(record("file_uploaded", {"phonoglyph.event.id": EVENT_ID, **many})))
    assert record_result.rejected == 1
    # long top-level strings are cut by the scrubber later: such an event is taken
    long = map_traces(traces(span({"phonoglyph.operation": "render", "text": "x" * 2_000_000}))).events
    assert len(long) == 1 and len(encode_event(long[0])) > mapping.MAX_EVENT_BYTES
    # a resource's long service name is cut at once
    named = map_traces(traces(span({"phonoglyph.operation": "render"}), resource={"service.name": "s" * 10_000}))
    assert len(named.events[0]["properties"]["service.name"]) == 4097


def test_the_rules_remember_a_bounded_number_of_attribute_keys():
    rules = MappingRules(drop_properties=frozenset({"k1"}))
    many = {f"k{n}": n for n in range(mapping._MAX_VERDICTS + 10)}
    properties = map_traces(traces(span({"phonoglyph.operation": "render", **many})), rules).events[0]["properties"]
    assert len(rules.verdicts) <= mapping._MAX_VERDICTS
    assert "k1" not in properties and properties["k0"] == 0 and properties[f"k{mapping._MAX_VERDICTS + 9}"] > 0
    assert (
        map_traces(traces(span({"phonoglyph.operation": "render", "k1": 1})), rules).events[0]["properties"].get("k1")
        is None
    )
    assert "k1" in map_traces(traces(span({"phonoglyph.operation": "render", "k1": 1}))).events[0]["properties"]


def test_fast_path_equals_the_full_scan_and_the_attribute_rules_on_hostile_spans():
    """Random spans mixing the keys the mapping reads, request dumps, repeated keys, the tag's bytes as a
    value, nested and odd values, bad ids and times: the raw-body path gives what the full scan gives, and
    each event's attribute properties are what the rules keep of ``attributes_dict`` (the first of a
    repeated key); once scrubbed, no seeded secret is left in a property."""
    import json
    import random

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    from collector.events import encode_event
    from collector.processors.scrub import ScrubProcessor
    from collector.processors.values import attributes_dict
    from tests.unit.collector.otlp_builders import any_value as otlp_value

    secrets = ("Bearer s3cr3tT0kenValue123456", "someone@example.com", "password=hunter2xyz")
    secret_parts = ("s3cr3tT0kenValue123456", "someone@example.com", "hunter2xyz")
    keys = [
        "phonoglyph.operation", "phonoglyph.outcome", "user.id", "session.id", "phonoglyph.user.guest",
        "error.type", "url.path", "user_agent.original", "http.request.header.authorization", "http.route",
        "plain", "note", "trace_id", "password", "file.size", "event.name", "phonoglyph.event.id",
    ]  # fmt: skip
    values = [
        "render", "", "phonoglyph.operation", "completed", "failed", "abandoned", 3, -(2**63), 2.5,
        float("nan"), True, False, b"\x00\xff", [1, "two", [3]], {"k": {"phonoglyph.operation": "x"}},
        "x" * 5000, *secrets,
    ]  # fmt: skip
    rules_choices = [
        mapping.DEFAULT_RULES,
        MappingRules(drop_properties=frozenset({"plain", "file.size"})),
        MappingRules(allow_properties=frozenset({"note", "url.path", "password"})),
        MappingRules(keep_request_attributes=True),
        MappingRules(keep_request_attributes=frozenset({"url.path"}), rename_events={"render_completed": "r"}),
    ]
    fixed = {
        "processing_time_ms", "error_type", "trace_id", "span_id", "service.name", "deployment.environment",
        "$ignore_sent_at", "$session_id", "is_guest", "$process_person_profile",
    }  # fmt: skip
    rng = random.Random(12)
    scrub = ScrubProcessor()
    mapped = 0
    for _ in range(300):
        request = ExportTraceServiceRequest()
        spans = {}
        for _ in range(rng.randint(1, 3)):
            resource_spans = request.resource_spans.add()
            resource_spans.resource.attributes.extend(traces().resource_spans[0].resource.attributes)
            for _ in range(rng.randint(1, 2)):
                scope = resource_spans.scope_spans.add()
                for _ in range(rng.randint(0, 4)):
                    item = span(
                        {},
                        span_id=rng.choice([b"\0" * 8, rng.randbytes(8)]) if rng.random() < 0.1 else rng.randbytes(8),
                        end=rng.choice([T0 - 1, 0]) if rng.random() < 0.05 else T0 + rng.randint(1, 10**9),
                        error=rng.random() < 0.3,
                    )
                    for _ in range(rng.randint(0, 8)):
                        key = rng.choice(keys)
                        value = rng.choice(values)
                        item.attributes.append(KeyValue(key=key, value=otlp_value(value)))
                    scope.spans.append(item)
                    spans[item.span_id.hex()] = item
        rules = rng.choice(rules_choices)
        fast = map_traces(request, rules, raw_body=request.SerializeToString())
        full = map_traces(request, rules)
        assert (fast.received, fast.rejected, fast.ignored, fast.events) == (
            full.received,
            full.rejected,
            full.ignored,
            full.events,
        )
        for event in fast.events:
            attrs = attributes_dict(spans[event["properties"]["span_id"]].attributes)
            kept = {
                key: value
                for key, value in attrs.items()
                if key not in mapping._CONSUMED_KEYS
                and key not in rules.drop_properties
                and (rules.allow_properties is None or key in rules.allow_properties)
                and (
                    rules.keep_request_attributes is True
                    or not mapping.is_request_attribute(key)
                    or (rules.keep_request_attributes is not False and key in rules.keep_request_attributes)
                )
                and key not in fixed
            }
            properties = event["properties"]
            assert {key: properties[key] for key in properties if key not in fixed} == kept
            mapped += 1
        scrub.process(fast.events)
        for event in fast.events:  # identity keys are never scrubbed (docs/architecture.md "Scrubbing")
            text = json.dumps({key: value for key, value in event["properties"].items() if key != "$session_id"})
            assert not any(part in text for part in secret_parts), text
            assert json.loads(encode_event(event)) == json.loads(json.dumps(event))
    assert mapped > 100


def test_span_event_uuid_is_uuid5_for_any_ids_and_name():
    import random
    import uuid

    rng = random.Random(9)
    for _ in range(2000):
        trace_id, span_id, name = rng.randbytes(16).hex(), rng.randbytes(8).hex(), rng.choice(["a", "render_é", ""])
        assert mapping.span_event_uuid(trace_id, span_id, name) == str(
            uuid.uuid5(mapping.UUID_NAMESPACE, f"{trace_id}:{span_id}:{name}")
        )


def test_a_raw_body_that_is_not_the_requests_takes_the_full_scan():
    """The fast path maps the request's own spans at the indexes the bytes give: bytes of another request
    (another span count) are not trusted for that."""
    request = traces(span({"phonoglyph.operation": "render"}))
    other = traces(span({"note": "x"}), span({"phonoglyph.operation": "render"}, span_id=b"\x03" * 8))
    result = map_traces(request, raw_body=other.SerializeToString())
    full = map_traces(request)
    assert (result.received, result.ignored, result.events) == (full.received, full.ignored, full.events)
    assert [event["properties"]["span_id"] for event in result.events] == [SPAN]
