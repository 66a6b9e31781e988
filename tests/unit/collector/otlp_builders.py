"""Small builders of OTLP protobuf requests for the collector's tests."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")
T0 = 1_764_300_000_000_000_000  # 2025-11-28T03:20:00Z
RESOURCE = {"service.name": "api", "deployment.environment": "test", "host.name": "box"}


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, (list, tuple)):
        result = AnyValue()
        result.array_value.values.extend(any_value(item) for item in value)
        return result
    if isinstance(value, dict):
        result = AnyValue()
        result.kvlist_value.values.extend(attributes(value))
        return result
    return AnyValue(string_value=value)


def attributes(values: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=key, value=any_value(value)) for key, value in values.items()]


def span(
    attrs: dict[str, Any],
    *,
    name: str = "op",
    start: int = T0,
    end: int = T0 + 1_500_000_000,
    trace_id: bytes = TRACE_ID,
    span_id: bytes = SPAN_ID,
    error: bool = False,
) -> Span:
    result = Span(
        trace_id=trace_id,
        span_id=span_id,
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        kind=Span.SPAN_KIND_INTERNAL,
    )
    result.attributes.extend(attributes(attrs))
    if error:
        result.status.code = Status.STATUS_CODE_ERROR
        result.status.message = "boom"
    return result


def traces(*spans: Span, resource: dict[str, Any] = RESOURCE) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(attributes(resource))
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "tests"
    scope.spans.extend(spans)
    return request


def record(
    event_name: str, attrs: dict[str, Any], *, time: int = T0, trace_id: bytes = TRACE_ID, span_id: bytes = SPAN_ID
) -> LogRecord:
    result = LogRecord(
        time_unix_nano=time,
        observed_time_unix_nano=time + 5,
        event_name=event_name,
        trace_id=trace_id,
        span_id=span_id,
        severity_number=9,
    )
    result.attributes.extend(attributes(attrs))
    return result


def logs(*records: LogRecord, resource: dict[str, Any] = RESOURCE) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend(attributes(resource))
    resource_logs.scope_logs.add().log_records.extend(records)
    return request
