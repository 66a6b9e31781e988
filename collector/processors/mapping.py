"""Span and event record → PostHog event: pure functions over OTLP protobuf messages.

A PostHog event is a plain dict in the ``/batch/`` wire format (``collector.events``). Every key is
fixed here and never recomputed downstream. The defaults follow docs/architecture.md
"PostHog mapping"; ``MappingRules`` (from ``COLLECTOR_CONFIG``) rename events, drop or allow
properties and opt extra spans in. Choices made once, documented in README:

- attribute keys become property keys unchanged, dots kept (``audio.duration_s``), so a
  PostHog property reads exactly like the OTel attribute and the Sentry span data;
- ``user.id`` → ``distinct_id``; a guest (``phonoglyph.user.guest: true``) keeps its guest id
  as ``distinct_id`` and gets the property ``is_guest: true`` (PostHog reserves ``$`` names);
- no ``user.id``: a person-less event (``$process_person_profile: false``) whose ``distinct_id``
  is ``session:<session.id>``, else ``trace:<trace_id>``, else ``event:<uuid>``;
- ``uuid`` is derived from the event name *before* renaming, so a rename rule never changes it; an
  event record with no ``phonoglyph.event.id`` (a foreign SDK's) gets a uuid derived from its whole
  content (``record_content_uuid``), so only a true resend de-duplicates;
- request dumps (``REQUEST_ATTRIBUTES``: URLs, query strings, headers, user agents, client addresses,
  statements) are left out of properties unless ``MappingRules.keep_request_attributes`` says otherwise.

Untagged spans cost next to nothing: for protobuf bodies only the framing is walked and a span is
touched as a message only when its bytes contain the tag key; the full scan (OTLP/JSON, or rules
that opt spans in by name or route) reads attribute keys only and builds no dict for them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from hashlib import sha1
from typing import Any

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE

from collector.codecs.protowire import encode_varint, spans_containing
from collector.events import PostHogEvent, encode_event_bytes
from collector.pipeline import Batch
from collector.processors.values import CUT, MAX_STRING_CHARS, any_value, iso_timestamp
from instrumentation import semconv

UUID_NAMESPACE = uuid.UUID("5f1c2b0e-7d3a-5c8e-9b4f-0a6d1e2c3b4a")
"""uuid5 namespace of span-derived events: ``uuid5(UUID_NAMESPACE, f"{trace_id}:{span_id}:{event}")``, and of
content-derived ones (``record_content_uuid``)."""

OPERATION_TAG = semconv.OPERATION.encode()
EVENT_NAME_ATTRIBUTE = "event.name"
"""OTel's event name attribute (incubating in opentelemetry-semantic-conventions), read when a record has no
``event_name``."""
DEPLOYMENT_ENVIRONMENT_NAME = "deployment.environment.name"
"""The newer name of ``deployment.environment`` (incubating), read when a resource has only that one."""
UNKNOWN_ERROR_TYPE = "_OTHER"
"""OTel's fallback value of ``error.type`` when a failure carries none."""

_CONSUMED_KEYS = frozenset(
    {
        semconv.OPERATION,
        semconv.OUTCOME,
        semconv.ERROR_TYPE,
        semconv.DURATION_MS,
        semconv.EVENT_ID,
        semconv.USER_ID,
        semconv.SESSION_ID,
        semconv.USER_GUEST,
        EVENT_NAME_ATTRIBUTE,
    }
)
REQUEST_ATTRIBUTES = frozenset(
    {
        # the request's target: paths and query strings carry ids, e-mail addresses, tokens
        "http.url",
        "url.full",
        "url.original",
        "http.target",
        "url.path",
        "url.query",
        "url.fragment",
        # who sent it: identifies a person or a device
        "http.user_agent",
        "user_agent.original",
        "http.client_ip",
        "client.address",
        "source.address",
        "net.peer.ip",
        "net.peer.name",
        "net.sock.peer.addr",
        "network.peer.address",
        # what it carried
        "db.statement",
        "db.query.text",
    }
)
"""Attributes that dump a request rather than describe the operation: left out of PostHog properties by
default (the route, method and status code stay: ``http.route``, ``http.request.method``,
``http.response.status_code``). Keys starting with ``REQUEST_ATTRIBUTE_PREFIXES`` too."""
REQUEST_ATTRIBUTE_PREFIXES = (
    "http.request.header.",
    "http.response.header.",
    "rpc.grpc.request.metadata.",
    "rpc.grpc.response.metadata.",
    "rpc.request.metadata.",
    "rpc.response.metadata.",
)
"""Prefixes of header and metadata attributes: request dumps too (``REQUEST_ATTRIBUTES``)."""

MAX_EVENT_BYTES = 512 * 1024
"""A larger mapped event is rejected (``partial_success``) rather than taken and then dead-lettered by
delivery (whose ``max_event_bytes`` is 900 KiB; scrubbing adds a little)."""
_MEASURED_ITEM_BYTES = MAX_EVENT_BYTES // 8
"""Only events of larger spans or records are measured: JSON grows a value at most about six-fold
(escapes, hex), and resource properties are cut to ``MAX_STRING_CHARS``."""

_OUTCOMES = (semconv.OUTCOME_COMPLETED, semconv.OUTCOME_FAILED)
_MAX_REASONS = 3


@dataclass(frozen=True)
class MappingRules:
    """Configurable part of the mapping (YAML ``mapping:``); the defaults are docs/architecture.md's."""

    rename_events: Mapping[str, str] = field(default_factory=dict)
    drop_properties: frozenset[str] = frozenset()
    allow_properties: frozenset[str] | None = None
    """When set, only these attribute-derived properties pass (fixed properties always do)."""
    span_names: Mapping[str, str] = field(default_factory=dict)
    """Opt-in: span name → operation, mapped as if tagged ``phonoglyph.operation=<operation>``."""
    http_routes: Mapping[str, str] = field(default_factory=dict)
    """Opt-in: ``http.route`` attribute value → operation."""
    keep_request_attributes: bool | frozenset[str] = False
    """``True`` keeps every request attribute (``REQUEST_ATTRIBUTES``) as a property; a set keeps those
    named; the default leaves them all out."""
    verdicts: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    """What these rules do with each attribute key seen (``_verdict``), bounded by ``_MAX_VERDICTS``."""


def is_request_attribute(key: str) -> bool:
    """Whether an attribute key dumps a request (``REQUEST_ATTRIBUTES``, ``REQUEST_ATTRIBUTE_PREFIXES``)."""
    return key in REQUEST_ATTRIBUTES or key.startswith(REQUEST_ATTRIBUTE_PREFIXES)


DEFAULT_RULES = MappingRules()

_CONSUMED, _KEPT, _DROPPED = 0, 1, 2
_PLAIN_VALUES = frozenset({"string_value", "int_value", "bool_value"})
"""``AnyValue`` kinds read as they are (``any_value`` returns them unchanged)."""
_MAX_VERDICTS = 4096


def _verdict(rules: MappingRules, key: str) -> int:
    """Whether an attribute is read by the mapping itself, kept as a property, or left out."""
    if key in _CONSUMED_KEYS:
        return _CONSUMED
    allow, keep = rules.allow_properties, rules.keep_request_attributes
    kept = (
        key not in rules.drop_properties
        and (allow is None or key in allow)
        and (keep is True or not is_request_attribute(key) or (keep is not False and key in keep))
    )
    return _KEPT if kept else _DROPPED


def _split_attributes(attributes: Iterable[KeyValue], rules: MappingRules) -> tuple[dict[str, Any], dict[str, Any]]:
    """(properties, consumed): the attributes kept as properties and those the mapping reads
    (``_CONSUMED_KEYS``), in one pass; a left-out attribute's value is never read. The first of a
    repeated key wins, as in ``attributes_dict``. The operation tag is read as a string value only."""
    verdicts = rules.verdicts
    properties: dict[str, Any] = {}
    consumed: dict[str, Any] = {}
    for kv in attributes:
        key = kv.key
        verdict = verdicts.get(key)
        if verdict is None:
            if len(verdicts) >= _MAX_VERDICTS:
                verdicts.clear()
            verdict = verdicts[key] = _verdict(rules, key)
        if verdict == _DROPPED:
            continue
        target = properties if verdict == _KEPT else consumed
        if key not in target:
            value = kv.value
            if key == semconv.OPERATION:  # the tag is a string, as the full scan reads it: else it is empty
                target[key] = value.string_value
                continue
            kind = value.WhichOneof("value")
            target[key] = getattr(value, kind) if kind in _PLAIN_VALUES else any_value(value)
    return properties, consumed


@dataclass
class MappingResult:
    events: list[PostHogEvent] = field(default_factory=list)
    received: int = 0
    """Spans, log records or metric data points in the request."""
    rejected: int = 0
    """Items that should have become events but could not (reported as ``partial_success``)."""
    ignored: int = 0
    """Items that are not analytics by design: untagged spans, log records without an event name."""
    reasons: list[str] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < _MAX_REASONS and reason not in self.reasons:
            self.reasons.append(reason)

    @property
    def error_message(self) -> str:
        return "; ".join(self.reasons)


class _Rejected(Exception):
    """An item that cannot be mapped; its message becomes part of partial_success."""


# -- ids --------------------------------------------------------------------------------------


_NAMESPACE_BYTES = UUID_NAMESPACE.bytes


def span_event_uuid(trace_id: str, span_id: str, event_name: str) -> str:
    """``str(uuid.uuid5(UUID_NAMESPACE, f"{trace_id}:{span_id}:{event_name}"))``, without the objects.

    A span id is unique within its trace (OTLP), so this names one span's event; a resend names it again."""
    return _uuid5(f"{trace_id}:{span_id}:{event_name}".encode())


def record_content_uuid(record: LogRecord, origin: bytes = b"") -> str:
    """The uuid of an event record that names none: uuid5 over its whole content, the record's protobuf
    serialization (body, attributes, times, severity, ids, event name, flags) after ``origin`` (its
    resource and scope, ``record_origin``). Serializing the same parsed content gives the same bytes, so
    a resend keeps its uuid while two records differing in anything get two."""
    return _uuid5(b"record\0" + origin + record.SerializeToString(deterministic=True))


def record_origin(resource: Message, resource_schema_url: str, scope: Message, scope_schema_url: str) -> bytes:
    """The resource and scope part of ``record_content_uuid``'s input, each part length-prefixed."""
    parts = (
        resource.SerializeToString(deterministic=True),
        resource_schema_url.encode(),
        scope.SerializeToString(deterministic=True),
        scope_schema_url.encode(),
    )
    return b"".join(encode_varint(len(part)) + part for part in parts)


_VARIANT_DIGITS = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
"""A hex digit with its two high bits set to RFC 4122's variant (10)."""


def _uuid5(name: bytes) -> str:
    """``str(uuid.uuid5(UUID_NAMESPACE, name))``: the SHA-1's first 16 bytes in hex, version and variant
    bits set in the hex text."""
    text = sha1(_NAMESPACE_BYTES + name).hexdigest()
    return f"{text[:8]}-{text[8:12]}-5{text[13:16]}-{_VARIANT_DIGITS[text[16]]}{text[17:20]}-{text[20:32]}"


def _ids(trace_id: bytes, span_id: bytes) -> tuple[str, str]:
    if len(trace_id) == 16 and len(span_id) == 8 and any(trace_id) and any(span_id):
        return trace_id.hex(), span_id.hex()
    raise _Rejected("invalid trace_id or span_id")


def _optional_ids(trace_id: bytes, span_id: bytes) -> tuple[str | None, str | None]:
    """Ids of an event record, which may have none (but not invalid ones)."""
    if not trace_id and not span_id:
        return None, None
    return _ids(trace_id, span_id)


def _resource_properties(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    resource: dict[str, Any] = {}
    for kv in attributes:
        if kv.key == semconv.SERVICE_NAME:
            key = semconv.SERVICE_NAME
        elif kv.key == semconv.DEPLOYMENT_ENVIRONMENT or (
            kv.key == DEPLOYMENT_ENVIRONMENT_NAME and semconv.DEPLOYMENT_ENVIRONMENT not in resource
        ):
            key = semconv.DEPLOYMENT_ENVIRONMENT
        else:
            continue
        value = any_value(kv.value)
        if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
            value = value[:MAX_STRING_CHARS] + CUT
        resource[key] = value
    return resource


def _sized(event: PostHogEvent, item_bytes: int) -> PostHogEvent:
    """The event, unless it is over ``MAX_EVENT_BYTES`` (measured for large items only, with its top-level
    strings cut as the scrubber will cut them)."""
    if item_bytes > _MEASURED_ITEM_BYTES:
        properties = {
            key: value[:MAX_STRING_CHARS] + CUT if isinstance(value, str) and len(value) > MAX_STRING_CHARS else value
            for key, value in event["properties"].items()
        }
        size = len(encode_event_bytes({**event, "properties": properties}))
        if size > MAX_EVENT_BYTES:
            raise _Rejected(f"event over {MAX_EVENT_BYTES} bytes once mapped")
    return event


# -- one event ----------------------------------------------------------------------------------


def _event(
    name: str,
    event_uuid: str,
    time_unix_nano: int,
    properties: dict[str, Any],
    attributes: dict[str, Any],
    resource: dict[str, Any],
    trace_id: str | None,
    span_id: str | None,
    extra: dict[str, Any],
    rules: MappingRules,
) -> PostHogEvent:
    """The event; ``properties`` (the kept attributes, ``_split_attributes``) is completed in place,
    ``attributes`` holds the consumed ones."""
    properties.update(extra)
    if trace_id is not None:
        properties["trace_id"] = trace_id
        properties["span_id"] = span_id
    properties.update(resource)
    properties["$ignore_sent_at"] = True

    user_id = attributes.get(semconv.USER_ID)
    session_id = attributes.get(semconv.SESSION_ID)
    if session_id not in (None, ""):
        properties["$session_id"] = str(session_id)
    if user_id not in (None, ""):
        distinct_id = str(user_id)
        if attributes.get(semconv.USER_GUEST) is True:
            properties["is_guest"] = True
    else:
        properties["$process_person_profile"] = False
        if session_id not in (None, ""):
            distinct_id = f"session:{session_id}"
        elif trace_id is not None:
            distinct_id = f"trace:{trace_id}"
        else:
            distinct_id = f"event:{event_uuid}"
    return {
        "event": rules.rename_events.get(name, name),
        "distinct_id": distinct_id,
        "properties": properties,
        "timestamp": iso_timestamp(time_unix_nano),
        "uuid": event_uuid,
    }


def _outcome_extra(outcome_failed: bool, duration_ms: float, attributes: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {"processing_time_ms": duration_ms}
    if outcome_failed:
        error_type = attributes.get(semconv.ERROR_TYPE)
        extra["error_type"] = str(error_type) if error_type not in (None, "") else UNKNOWN_ERROR_TYPE
    return extra


def map_span(
    span: Span,
    operation: str,
    resource: dict[str, Any],
    rules: MappingRules = DEFAULT_RULES,
    split: tuple[dict[str, Any], dict[str, Any]] | None = None,
    span_bytes: int | None = None,
) -> PostHogEvent | None:
    """A tagged (or opted-in) span → ``<operation>_completed`` / ``<operation>_failed``; None for an
    abandoned operation (another attempt reports its outcome). ``split`` (``_split_attributes``) and
    ``span_bytes`` (its serialized size), when the caller has them, are not computed again."""
    if not operation or not isinstance(operation, str):
        raise _Rejected("empty phonoglyph.operation")
    trace_id, span_id = _ids(span.trace_id, span.span_id)
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if end == 0 or end < start:
        raise _Rejected("span end time missing or before its start")
    properties, attributes = _split_attributes(span.attributes, rules) if split is None else split
    outcome = attributes.get(semconv.OUTCOME)
    if outcome == semconv.OUTCOME_ABANDONED:
        return None
    if outcome not in _OUTCOMES:
        outcome = semconv.OUTCOME_FAILED if span.status.code == Status.STATUS_CODE_ERROR else semconv.OUTCOME_COMPLETED
    failed = outcome == semconv.OUTCOME_FAILED
    name = operation + (semconv.FAILED_SUFFIX if failed else semconv.COMPLETED_SUFFIX)
    extra = _outcome_extra(failed, (end - start) / 1e6, attributes)
    event_uuid = span_event_uuid(trace_id, span_id, name)
    event = _event(name, event_uuid, end, properties, attributes, resource, trace_id, span_id, extra, rules)
    return _sized(event, span.ByteSize() if span_bytes is None else span_bytes)


def map_log_record(
    record: LogRecord, resource: dict[str, Any], rules: MappingRules = DEFAULT_RULES, *, origin: bytes = b""
) -> PostHogEvent | None:
    """An event record → a PostHog event; ``None`` for a plain log record (no event name). ``origin``
    (``record_origin``) is the record's resource and scope, part of a content-derived uuid."""
    properties, attributes = _split_attributes(record.attributes, rules)
    name = record.event_name or attributes.get(EVENT_NAME_ATTRIBUTE)
    if not name:
        return None
    if not isinstance(name, str):
        raise _Rejected("event name is not a string")
    time_unix_nano = record.time_unix_nano or record.observed_time_unix_nano
    if not time_unix_nano:
        raise _Rejected("event record without a time")
    operation = attributes.get(semconv.OPERATION)
    if (
        isinstance(operation, str)
        and operation
        and name in (operation + semconv.COMPLETED_SUFFIX, operation + semconv.FAILED_SUFFIX)
    ):
        # The outcome of an unsampled operation: the same event its span would have given.
        trace_id, span_id = _ids(record.trace_id, record.span_id)
        duration_ms = attributes.get(semconv.DURATION_MS)
        if isinstance(duration_ms, bool) or not isinstance(duration_ms, (int, float)):
            raise _Rejected(f"outcome event record without a numeric {semconv.DURATION_MS}")
        extra = _outcome_extra(name.endswith(semconv.FAILED_SUFFIX), float(duration_ms), attributes)
        event_uuid = span_event_uuid(trace_id, span_id, name)
        event = _event(
            name, event_uuid, time_unix_nano, properties, attributes, resource, trace_id, span_id, extra, rules
        )
        return _sized(event, record.ByteSize())
    record_trace_id, record_span_id = _optional_ids(record.trace_id, record.span_id)
    event_id = attributes.get(semconv.EVENT_ID)
    if event_id is None:
        # Deterministic all the same, so that a retried OTLP request maps to the same uuid.
        event_uuid = record_content_uuid(record, origin)
    else:
        try:
            event_uuid = str(uuid.UUID(str(event_id)))
        except ValueError:
            raise _Rejected(f"{semconv.EVENT_ID} is not a UUID") from None
    event = _event(
        name, event_uuid, time_unix_nano, properties, attributes, resource, record_trace_id, record_span_id, {}, rules
    )
    return _sized(event, record.ByteSize())


# -- requests -----------------------------------------------------------------------------------


def _tagged_operation(span: Span, rules: MappingRules) -> str | None:
    """The span's operation, reading attribute keys only (the fast path for untagged spans)."""
    routes = rules.http_routes
    for kv in span.attributes:
        key = kv.key
        if key == semconv.OPERATION:
            return kv.value.string_value
        if routes and key == HTTP_ROUTE:
            operation = routes.get(kv.value.string_value)
            if operation is not None:
                return operation
    if rules.span_names:
        return rules.span_names.get(span.name)
    return None


def map_traces(
    request: ExportTraceServiceRequest, rules: MappingRules = DEFAULT_RULES, *, raw_body: bytes | None = None
) -> MappingResult:
    """Tagged spans → events.

    ``raw_body`` (the protobuf bytes ``request`` was parsed from) enables the fast path: the framing is
    walked and only spans whose bytes contain the tag key are touched as messages (the request's own, by
    their indexes), because building protobuf objects for the untagged spans would cost more than
    everything else together.
    """
    if raw_body is not None and not (rules.span_names or rules.http_routes):
        try:
            received, candidates = spans_containing(raw_body, OPERATION_TAG)
        except (ValueError, IndexError):
            candidates = None  # not the framing we expect: take the full scan
        if candidates is not None and received == sum(
            len(scope_spans.spans)
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
        ):  # (else the bytes are not the request's: take the full scan)
            result = MappingResult(received=received)
            resources: dict[int, dict[str, Any]] = {}
            scopes: dict[tuple[int, int], Any] = {}
            for r, s, i, start, end in candidates:
                spans = scopes.get((r, s))
                if spans is None:
                    spans = scopes[r, s] = request.resource_spans[r].scope_spans[s].spans
                span = spans[i]  # already parsed: cheaper than parsing its bytes again
                split = _split_attributes(span.attributes, rules)
                if semconv.OPERATION not in split[1]:
                    continue  # the tag's bytes were a value, not the key
                if r not in resources:
                    resources[r] = _resource_properties(request.resource_spans[r].resource.attributes)
                operation = split[1][semconv.OPERATION]
                _map_one_span(result, span, operation, resources[r], rules, split, end - start)
            result.ignored = result.received - len(result.events) - result.rejected
            return result
    return _scan_traces(request, rules)


def _map_one_span(
    result: MappingResult,
    span: Span,
    operation: Any,
    resource: dict[str, Any],
    rules: MappingRules,
    split: tuple[dict[str, Any], dict[str, Any]] | None = None,
    span_bytes: int | None = None,
) -> None:
    try:
        event = map_span(span, operation, resource, rules, split, span_bytes)
    except _Rejected as exc:
        result.reject(str(exc))
        return
    if event is not None:
        result.events.append(event)


def _scan_traces(request: ExportTraceServiceRequest, rules: MappingRules) -> MappingResult:
    result = MappingResult()
    for resource_spans in request.resource_spans:
        resource = None
        for scope_spans in resource_spans.scope_spans:
            spans = scope_spans.spans
            result.received += len(spans)
            for span in spans:
                operation = _tagged_operation(span, rules)
                if operation is None:
                    continue
                if resource is None:
                    resource = _resource_properties(resource_spans.resource.attributes)
                _map_one_span(result, span, operation, resource, rules)
    result.ignored = result.received - len(result.events) - result.rejected
    return result


def map_logs(request: ExportLogsServiceRequest, rules: MappingRules = DEFAULT_RULES) -> MappingResult:
    """Event records (log records with an event name) → events; plain log records are ignored."""
    result = MappingResult()
    for resource_logs in request.resource_logs:
        resource = _resource_properties(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            origin = record_origin(
                resource_logs.resource, resource_logs.schema_url, scope_logs.scope, scope_logs.schema_url
            )
            for record in scope_logs.log_records:
                result.received += 1
                try:
                    event = map_log_record(record, resource, rules, origin=origin)
                except _Rejected as exc:
                    result.reject(str(exc))
                    continue
                if event is None:
                    result.ignored += 1
                else:
                    result.events.append(event)
    return result


def count_metric_points(request: ExportMetricsServiceRequest) -> MappingResult:
    """Metrics are accepted and counted, never turned into events."""
    result = MappingResult()
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    result.received += len(getattr(metric, kind).data_points)
    result.ignored = result.received
    return result


class MappingProcessor:
    """The pipeline's first processor: derives a batch's events and counts from its request."""

    def __init__(self, rules: MappingRules = DEFAULT_RULES) -> None:
        self._rules = rules

    def process(self, batch: Batch) -> None:
        request: Any = batch.request
        if batch.signal == "traces":
            result = map_traces(request, self._rules, raw_body=batch.raw_body)
            batch.ignored_reason = "untagged_span"
        elif batch.signal == "logs":
            result = map_logs(request, self._rules)
            batch.ignored_reason = "log_without_event_name"
        else:
            result = count_metric_points(request)
            batch.ignored_reason = "metric_point"
        batch.events = result.events
        batch.received, batch.rejected, batch.ignored = result.received, result.rejected, result.ignored
        batch.error_message = result.error_message
