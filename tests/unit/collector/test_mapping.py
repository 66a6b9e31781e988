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

    monkeypatch.setattr(mapping, "attributes_dict", forbidden)
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
