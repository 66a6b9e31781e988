"""EncodingSpanProcessor: spans encoded where they end, in chunks; the queue holds request bodies."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Sequence

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from instrumentation import semconv
from instrumentation._internal import batching
from instrumentation._internal.batching import EncodingSpanProcessor
from instrumentation._internal.config import QueueConfig
from instrumentation._internal.otlp_encoding import encode_spans_request
from instrumentation._internal.stats import STATS


class Payloads:
    """A PayloadExporter that records where each encoding ran and what each export sent."""

    def __init__(self, deliver: bool = True, encodes: bool = True) -> None:
        self.deliver = deliver
        self.encodes = encodes
        self.encoded_on: list[tuple[str, int]] = []
        self.sent: list[list[str]] = []
        self.lock = threading.Lock()

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes | None:
        with self.lock:
            self.encoded_on.append((threading.current_thread().name, len(spans)))
        return encode_spans_request(spans) if self.encodes else None

    def export_payload(self, payload: bytes) -> bool:
        request = ExportTraceServiceRequest.FromString(payload)  # joined bodies are one valid request
        names = [span.name for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
        with self.lock:
            self.sent.append(names)
        return self.deliver

    def shutdown(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _reset_stats() -> None:
    STATS.reset()


def _provider(
    payloads: Payloads, config: QueueConfig, **kwargs: object
) -> tuple[TracerProvider, EncodingSpanProcessor]:
    provider = TracerProvider()
    processor = EncodingSpanProcessor(payloads, config, **kwargs)  # type: ignore[arg-type]
    provider.add_span_processor(processor)
    return provider, processor


def test_spans_are_encoded_in_chunks_where_they_end_and_the_rest_at_a_flush() -> None:
    payloads = Payloads()
    provider, processor = _provider(payloads, QueueConfig(max_export_batch_size=4, schedule_delay_s=60))
    tracer = provider.get_tracer("t")
    for index in range(10):
        tracer.start_span(f"s{index}").end()
    here = threading.current_thread().name
    assert payloads.encoded_on == [(here, 4), (here, 4)]  # two chunks, on the thread that ended them
    flusher = threading.Thread(target=processor.force_flush, name="flusher")
    flusher.start()
    flusher.join(10)
    assert payloads.encoded_on[2:] == [("flusher", 2)]  # the rest, by whoever flushes
    assert sorted(name for names in payloads.sent for name in names) == sorted(f"s{i}" for i in range(10))
    assert max(len(names) for names in payloads.sent) <= 4  # a batch is at most max_export_batch_size
    processor.shutdown()
    assert STATS.snapshot() == {}


def test_the_timer_sends_what_is_pending() -> None:
    payloads = Payloads()
    provider, processor = _provider(payloads, QueueConfig(max_export_batch_size=512, schedule_delay_s=0.05))
    provider.get_tracer("t").start_span("lonely").end()
    for _ in range(200):
        if payloads.sent:
            break
        threading.Event().wait(0.05)
    assert payloads.sent == [["lonely"]]
    processor.shutdown()


def test_threads_ending_spans_at_once_lose_and_repeat_none() -> None:
    payloads = Payloads()
    provider, processor = _provider(payloads, QueueConfig(max_queue_size=100_000, max_export_batch_size=8))
    tracer = provider.get_tracer("t")

    def end_spans(thread: int) -> None:
        for index in range(500):
            tracer.start_span(f"{thread}-{index}").end()

    threads = [threading.Thread(target=end_spans, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    processor.shutdown()
    sent = [name for names in payloads.sent for name in names]
    assert len(sent) == 4000 and set(sent) == {f"{t}-{i}" for t in range(8) for i in range(500)}


def test_no_span_outlives_its_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spans held until their batch was sent reached the GC's oldest generation (long full collections)."""
    monkeypatch.setattr(batching, "ENCODE_CHUNK_ITEMS", 4)
    payloads = Payloads()
    provider, processor = _provider(payloads, QueueConfig(max_export_batch_size=512, schedule_delay_s=60))
    tracer = provider.get_tracer("t")
    ended = []
    for index in range(4):
        span = tracer.start_span(f"s{index}")
        span.end()
        ended.append(weakref.ref(span))
    del span
    gc.collect()
    assert [ref() for ref in ended] == [None] * 4  # encoded and gone, though not sent yet
    assert payloads.sent == []
    processor.shutdown()
    assert payloads.sent == [["s0", "s1", "s2", "s3"]]


def test_a_full_queue_drops_whole_chunks_unencoded_and_counts_their_spans() -> None:
    payloads = Payloads()
    gate = threading.Event()
    original = payloads.export_payload
    payloads.export_payload = lambda payload: gate.wait(10) and original(payload)  # type: ignore[method-assign]
    provider, processor = _provider(
        payloads, QueueConfig(max_queue_size=4, max_export_batch_size=2, schedule_delay_s=60)
    )  # chunks of 2, at most 2 chunks queued
    tracer = provider.get_tracer("t")
    for index in range(10):
        tracer.start_span(f"s{index}").end()
    dropped = STATS.snapshot().get("spans_dropped", 0)
    gate.set()
    processor.shutdown()
    sent = [name for names in payloads.sent for name in names]
    assert dropped > 0 and dropped % 2 == 0 and len(sent) + dropped == 10
    assert sum(count for _, count in payloads.encoded_on) == len(sent)  # a dropped chunk is never encoded


@pytest.mark.parametrize("failure", ["refused", "encoding"])
def test_the_outcomes_of_undelivered_operation_spans_become_event_records(failure: str) -> None:
    payloads = Payloads(deliver=failure != "refused", encodes=failure != "encoding")
    handed: list[ReadableLogRecord] = []
    provider, processor = _provider(
        payloads, QueueConfig(max_export_batch_size=4, schedule_delay_s=60), on_undelivered=handed.extend
    )
    tracer = provider.get_tracer("t")
    tracer.start_span("render", attributes={semconv.OPERATION: "render", semconv.OUTCOME: "completed"}).end()
    tracer.start_span("GET /x").end()
    processor.force_flush()
    processor.shutdown()
    assert [record.log_record.event_name for record in handed] == ["render_completed"]
    assert STATS.snapshot()["spans_lost"] == 2


def test_a_batch_goes_in_requests_of_at_most_max_request_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks are joined up to MAX_REQUEST_BYTES a request (a larger chunk goes alone); a request that
    fails loses its own spans only, and hands over its own operations' outcomes."""
    monkeypatch.setattr(batching, "ENCODE_CHUNK_ITEMS", 2)
    chunk_bytes = len(encode_spans_request(_pair(TracerProvider(), 0)))
    monkeypatch.setattr(batching, "MAX_REQUEST_BYTES", 3 * chunk_bytes + 10)  # three chunks a request
    payloads = Payloads()
    original = payloads.export_payload

    def export_payload(payload: bytes) -> bool:
        delivered = original(payload)
        return delivered and "op-3" not in payloads.sent[-1]  # the request holding op-3 is refused

    payloads.export_payload = export_payload  # type: ignore[method-assign]
    handed: list[ReadableLogRecord] = []
    provider, processor = _provider(
        payloads, QueueConfig(max_export_batch_size=1000, schedule_delay_s=60), on_undelivered=handed.extend
    )
    for index in range(7):  # 7 chunks of 2 spans, each chunk_bytes long
        _pair(provider, index)
    big = "y" * (4 * chunk_bytes)
    for name in ("big-a", "big-b"):
        provider.get_tracer("t").start_span(name, attributes={"pad": big}).end()
    processor.force_flush()
    processor.shutdown()
    sizes = [len(names) for names in payloads.sent]
    assert sizes == [6, 6, 2, 2]  # three chunks, three, the last small one, then the big chunk alone
    assert sorted(name for names in payloads.sent for name in names) == sorted(
        [f"op-{i}" for i in range(7)] + [f"render-{i}" for i in range(7)] + ["big-a", "big-b"]
    )
    (lost,) = [names for names in payloads.sent if "op-3" in names]
    assert STATS.snapshot() == {
        "spans_export_failures": 1,
        "spans_lost": len(lost),
        "operation_outcomes_from_undelivered_spans": 3,
    }
    assert len(handed) == sum(name.startswith("render-") for name in lost) == 3


def _pair(provider: TracerProvider, index: int) -> list[ReadableSpan]:
    """An ordinary span and an operation span, ended: one chunk of two."""
    tracer = provider.get_tracer("t")
    operation = {semconv.OPERATION: "render", semconv.OUTCOME: "completed"}
    spans = []
    for name, attributes in ((f"op-{index}", {}), (f"render-{index}", operation)):
        span = tracer.start_span(name, attributes={"pad": "x" * 100, **attributes})
        span.end()
        spans.append(span)
    return spans  # type: ignore[return-value]
