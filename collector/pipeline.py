"""The pipeline contract: what a receiver hands on, what processors see, what backpressure looks like.

A receiver decodes a request and calls ``Consumer.consume(signal, request, raw_body)``; the consumer
(``Pipeline``) runs each ``Processor`` over one ``Batch`` in order (mapping first, then scrubbing, then
whatever observes batches), commits the batch's events through ``deliver`` and answers with a
``ConsumeResult``. Backpressure and storage trouble come back as ``RetryableError`` (429 or 503 with
Retry-After), so a receiver never knows what stores the events (docs/architecture.md "Collector pipeline").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf.message import Message

from collector.metrics import Metrics

__all__ = ["Batch", "ConsumeResult", "Consumer", "EventsProcessor", "Pipeline", "Processor", "RetryableError"]

RECEIVED_METRICS = {
    "traces": "received_spans_total",
    "logs": "received_log_records_total",
    "metrics": "received_metric_points_total",
}
"""The ``received_*`` counter of each signal."""


class RetryableError(Exception):
    """The request cannot be taken now: ``status`` 429 (backpressure) or 503 (storage trouble), with the
    ``Retry-After`` the sender should wait."""

    def __init__(self, status: int, message: str, *, retry_after_s: int) -> None:
        if status not in (429, 503):
            raise ValueError(f"a retryable status is 429 or 503, not {status}")
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class ConsumeResult:
    """What the answer reports: items that should have become events but could not (``partial_success``)."""

    rejected: int = 0
    error_message: str = ""


class Consumer(Protocol):
    def consume(self, signal: str, request: Message, raw_body: bytes | None) -> ConsumeResult:
        """Take one decoded request (``raw_body``: the protobuf bytes it was parsed from, None for JSON).

        Returns once its events are committed; raises RetryableError when they cannot be now.
        """
        ...


@dataclass
class Batch:
    """One request on its way through the processors."""

    signal: str
    """``traces``, ``logs`` or ``metrics``."""
    request: Message
    """The decoded export request (``ExportTraceServiceRequest``...)."""
    raw_body: bytes | None = None
    """The protobuf bytes ``request`` was parsed from (None for OTLP/JSON)."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """PostHog events derived from the request (docs/architecture.md "PostHog mapping")."""
    received: int = 0
    """Spans, log records or metric data points in the request."""
    rejected: int = 0
    """Items that should have become events but could not."""
    ignored: int = 0
    """Items that are not analytics by design (untagged spans, plain log records, metric points)."""
    ignored_reason: str = ""
    """The ``dropped_items_total`` reason of the ignored items."""
    error_message: str = ""
    """Why items were rejected (a few reasons, for ``partial_success``)."""


class Processor(Protocol):
    def process(self, batch: Batch) -> None:
        """Look at or change the batch in place (its events above all)."""
        ...


class EventsProcessor:
    """A processor from a function over a batch's events (``ScrubProcessor.process``), called when there are
    events."""

    def __init__(self, function: Callable[[list[dict[str, Any]]], object]) -> None:
        self._function = function

    def process(self, batch: Batch) -> None:
        if batch.events:
            self._function(batch.events)


class Pipeline:
    """The consumer behind a receiver: processors in order, then ``deliver`` (a durable commit that returns
    how many events were new, or raises RetryableError), then the observers.

    Observers (alerting) see a batch only once it is committed: a request refused with 429 or 503 is sent
    again, and counting it twice would skew every rate they compute.
    """

    def __init__(
        self,
        processors: Sequence[Processor],
        deliver: Callable[[list[dict[str, Any]]], int],
        metrics: Metrics,
        observers: Sequence[Processor] = (),
    ) -> None:
        self._processors = tuple(processors)
        self._deliver = deliver
        self._metrics = metrics
        self._observers = tuple(observers)

    def consume(self, signal: str, request: Message, raw_body: bytes | None) -> ConsumeResult:
        batch = Batch(signal, request, raw_body)
        for processor in self._processors:
            processor.process(batch)
        self._count(batch)
        if batch.events:
            self._metrics.inc("queued_events_total", self._deliver(batch.events))
        for observer in self._observers:
            observer.process(batch)
        return ConsumeResult(rejected=batch.rejected, error_message=batch.error_message)

    def _count(self, batch: Batch) -> None:
        metrics = self._metrics
        metrics.inc(RECEIVED_METRICS[batch.signal], batch.received)
        if batch.events:
            metrics.inc("mapped_events_total", len(batch.events))
        if batch.ignored:
            metrics.inc("dropped_items_total", batch.ignored, reason=batch.ignored_reason)
        if batch.rejected:
            metrics.inc("dropped_items_total", batch.rejected, reason="unmappable")
