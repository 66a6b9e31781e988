"""The scrubbing policy (:mod:`instrumentation.scrubbing`) applied to OTel spans and log records.

:func:`scrub_span` and :func:`scrub_log_record` run while our OTLP exporters encode, item by item in
chunks: spans where they end, 64 in a row (``batching.EncodingSpanProcessor``, through
:class:`SpanScrubbing`, which skips what it knows to be clean), event records on the export thread.
:class:`ScrubbingSpanExporter` and :class:`ScrubbingLogExporter` wrap any other exporter with them.
See docs/architecture.md, "Scrubbing".
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any, Final

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Status

from instrumentation._internal.lean_span import UNSET_STATUS, LeanSpan
from instrumentation._internal.otlp_encoding import (
    encode_lean_span_of_known_pairs,
    encode_pair,
    encode_span,
    encode_spans_request,
)
from instrumentation.scrubbing import SCRUBBED_ATTRIBUTE, Scrubber

MAX_ATTRIBUTES: Final = 128
"""OTel's default attribute count limit: ``phonoglyph.scrubbed`` is added only below it."""


def _with_scrubbed_paths(attributes: Any, paths: list[str]) -> Any:
    if not paths or len(attributes or ()) >= MAX_ATTRIBUTES:
        return attributes
    result = dict(attributes or {})
    previous = result.get(SCRUBBED_ATTRIBUTE) or ()
    result[SCRUBBED_ATTRIBUTE] = tuple(dict.fromkeys((*previous, *paths)))
    return result


class _ScrubbedSpan(ReadableSpan):
    """A scrubbed copy that keeps the original's dropped counts."""

    def __init__(self, original: ReadableSpan, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._original = original

    @property
    def dropped_attributes(self) -> int:
        return self._original.dropped_attributes

    @property
    def dropped_events(self) -> int:
        return self._original.dropped_events

    @property
    def dropped_links(self) -> int:
        return self._original.dropped_links


def _plain(attributes: Any) -> Any:
    """The dict inside the SDK's ``BoundedAttributes``: iterating it directly skips the ``Mapping``
    ABC's per-item calls (this runs for every exported span)."""
    inner = getattr(attributes, "_dict", None)
    return inner if type(inner) is dict else attributes


def span_attributes(span: ReadableSpan) -> Any:
    """A span's attributes as a plain mapping, without the read-only view ``ReadableSpan.attributes`` makes."""
    attributes = getattr(span, "_attributes", None)
    if type(attributes) is dict:  # a lean span's
        return attributes
    return _plain(attributes or span.attributes)


def scrub_span(span: ReadableSpan, scrubber: Scrubber) -> ReadableSpan:
    """The span itself when clean, else a scrubbed copy carrying ``phonoglyph.scrubbed``."""
    paths: list[str] = []
    work = scrubber.new_work()  # one budget for the whole span
    name = scrubber.scrub_string(span.name)
    if name is not span.name:
        paths.append("name")
    status = span.status
    if status.description:
        description = scrubber.scrub_string(status.description)
        if description is not status.description:
            paths.append("status.description")
            status = Status(status.status_code, description)
    original_attributes = span_attributes(span)
    attributes = (
        scrubber.scrub_value(original_attributes, "attributes", paths, work)
        if original_attributes
        else original_attributes
    )

    events: Sequence[Event] = span.events
    new_events: list[Event] | None = None
    for index, event in enumerate(events):
        original_event_attributes = _plain(event.attributes)
        event_attributes = (
            scrubber.scrub_value(original_event_attributes, f"events[{index}].attributes", paths, work)
            if original_event_attributes
            else original_event_attributes
        )
        if event_attributes is not original_event_attributes:
            if new_events is None:
                new_events = list(events)
            new_events[index] = Event(event.name, event_attributes, event.timestamp)
    if new_events is not None:
        events = tuple(new_events)

    links: Sequence[Link] = span.links
    new_links: list[Link] | None = None
    for index, link in enumerate(links):
        link_attributes = (
            scrubber.scrub_value(link.attributes, f"links[{index}].attributes", paths, work)
            if link.attributes
            else link.attributes
        )
        if link_attributes is not link.attributes:
            if new_links is None:
                new_links = list(links)
            new_links[index] = Link(link.context, link_attributes)
    if new_links is not None:
        links = tuple(new_links)

    if not paths:
        return span
    return _ScrubbedSpan(
        span,
        name=name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_with_scrubbed_paths(attributes, paths),
        events=events,
        links=links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


MAX_KNOWN_CLEAN: Final = 8192
"""Entries of each memo of :class:`SpanScrubbing` (emptied when full)."""
MAX_KNOWN_CLEAN_CHARS: Final = 64
"""Longest string value (or span name) :class:`SpanScrubbing` remembers as clean."""


class SpanScrubbing:
    """:func:`scrub_span` with ``scrubber`` as a span exporter's ``prepare``; for our OTLP exporter, the
    scrubbing and encoding of a request in one pass (:meth:`encode_request`).

    A span of ours (``LeanSpan``) that scrubbing leaves as it is has its name and its short string or int
    attributes remembered as clean, each pair with its encoded ``KeyValue``. A later span whose name and
    attributes are all remembered, with no status description and no event, is encoded from those bytes
    without being scrubbed again: the same method, route, host and status repeat on every request.
    Scrubbing a pair depends on its key and value only, so a pair found clean once is clean again.
    """

    __slots__ = ("_clean_names", "_clean_pairs", "scrubber")

    def __init__(self, scrubber: Scrubber) -> None:
        self.scrubber = scrubber
        self._clean_names: set[str] = set()
        self._clean_pairs: dict[tuple[str, Any], bytes] = {}

    def __call__(self, span: ReadableSpan) -> ReadableSpan:
        return scrub_span(span, self.scrubber)

    def encode_request(self, spans: Sequence[ReadableSpan]) -> bytes:
        """``ExportTraceServiceRequest`` bytes of ``spans``, scrubbed."""
        return encode_spans_request(spans, self._encode_span)

    def _encode_span(self, span: ReadableSpan) -> bytes:
        if type(span) is not LeanSpan:
            return encode_span(scrub_span(span, self.scrubber))
        status = span._status
        if span._name in self._clean_names and (status is UNSET_STATUS or not status.description):
            encoded = encode_lean_span_of_known_pairs(span, self._clean_pairs)
            if encoded is not None:
                return encoded
        scrubbed = scrub_span(span, self.scrubber)
        if scrubbed is span:
            self._remember(span)
        return encode_span(scrubbed)

    def _remember(self, span: LeanSpan) -> None:
        """A span that scrubbing left as it is: its name and its short str and int pairs are clean."""
        names, pairs = self._clean_names, self._clean_pairs
        if len(span._name) <= MAX_KNOWN_CLEAN_CHARS:
            if len(names) >= MAX_KNOWN_CLEAN:
                names.clear()
            names.add(span._name)
        attributes: Any = span._attributes or {}
        for key, value in attributes.items():
            value_type = type(value)
            cacheable = (value_type is str and len(value) <= MAX_KNOWN_CLEAN_CHARS) or value_type is int
            if cacheable and (key, value) not in pairs:
                if len(pairs) >= MAX_KNOWN_CLEAN:
                    pairs.clear()
                pairs[(key, value)] = encode_pair(key, value)


def scrub_log_record(record: ReadableLogRecord, scrubber: Scrubber) -> ReadableLogRecord:
    """The record itself when clean, else a scrubbed copy carrying ``phonoglyph.scrubbed``."""
    log_record = record.log_record
    paths: list[str] = []
    work = scrubber.new_work()  # one budget for the whole record
    body = scrubber.scrub_value(log_record.body, "body", paths, work)
    attributes = (
        scrubber.scrub_value(log_record.attributes, "attributes", paths, work)
        if log_record.attributes
        else log_record.attributes
    )
    if not paths:
        return record
    scrubbed = copy.copy(log_record)
    scrubbed.body = body
    scrubbed.attributes = _with_scrubbed_paths(attributes, paths)
    return dataclasses.replace(record, log_record=scrubbed)


class ScrubbingSpanExporter(SpanExporter):
    """Exports scrubbed copies of spans through ``inner`` (clean spans pass through as they are)."""

    def __init__(self, inner: SpanExporter, scrubber: Scrubber) -> None:
        self.inner = inner
        self.scrubber = scrubber

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([scrub_span(span, self.scrubber) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class ScrubbingLogExporter(LogRecordExporter):
    """Exports scrubbed copies of log/event records through ``inner``."""

    def __init__(self, inner: LogRecordExporter, scrubber: Scrubber) -> None:
        self.inner = inner
        self.scrubber = scrubber

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return self.inner.export([scrub_log_record(record, self.scrubber) for record in batch])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
