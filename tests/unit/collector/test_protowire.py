import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.codecs.protowire import decode_varint, encode_varint, length_delimited, spans_containing
from tests.unit.collector.otlp_builders import span, traces


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16_383, 16_384, 2**32, 2**63 - 1])
def test_varint_round_trip(value):
    encoded = encode_varint(value)
    assert decode_varint(b"\xaa" + encoded + b"\xbb", 1) == (value, 1 + len(encoded))
    assert len(encoded) == max(1, -(-value.bit_length() // 7))


def test_varint_matches_protobuf():
    from google.rpc.status_pb2 import Status

    for length in (5, 200, 70_000):
        wire = Status(message="x" * length).SerializeToString()
        assert wire[:1] == b"\x12" and decode_varint(wire, 1) == (length, 1 + len(encode_varint(length)))


def test_negative_and_truncated_varints_are_refused():
    with pytest.raises(ValueError):
        encode_varint(-1)
    with pytest.raises(IndexError):
        decode_varint(b"\x80\x80", 0)


def test_spans_containing_finds_the_tagged_spans():
    request = traces(
        span({"phonoglyph.operation": "render"}),
        span({"note": "plain"}, span_id=b"\x02" * 8),
        span({"phonoglyph.operation": "upload"}, span_id=b"\x03" * 8),
    )
    raw = request.SerializeToString()
    received, candidates = spans_containing(raw, b"phonoglyph.operation")
    assert received == 3
    assert [(r, s, i, raw[start:end]) for r, s, i, start, end in candidates] == [
        (0, 0, i, request.resource_spans[0].scope_spans[0].spans[i].SerializeToString()) for i in (0, 2)
    ]
    assert [raw[s:e] for s, e in length_delimited(raw, 0, len(raw), 1)] == [
        request.resource_spans[0].SerializeToString()
    ]


def test_spans_containing_refuses_other_framing():
    raw = traces(span({"phonoglyph.operation": "render"})).SerializeToString()
    with pytest.raises((ValueError, IndexError)):
        spans_containing(raw[:-3], b"phonoglyph.operation")
    assert spans_containing(ExportTraceServiceRequest().SerializeToString(), b"x") == (0, [])


def test_spans_containing_equals_a_search_of_each_span_for_any_needle():
    """Needles cut from anywhere in the body (in resources, scope names, spans, across a span's end): a span
    is a candidate exactly when its own bytes contain the needle."""
    import random

    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

    rng = random.Random(5)
    request = ExportTraceServiceRequest()
    for r in range(3):
        resource_spans: ResourceSpans = request.resource_spans.add()
        resource_spans.CopyFrom(
            traces(
                *(
                    span({"note": rng.choice(["ab", "phonoglyph.operation", "x"])}, span_id=bytes([n + 1]) * 8)
                    for n in range(4)
                ),
                resource={"service.name": rng.choice(["phonoglyph.operation", "api"])},
            ).resource_spans[0]
        )
        resource_spans.scope_spans.add().scope.name = f"scope-{r}-phonoglyph.operation"
        resource_spans.scope_spans[-1].spans.extend(resource_spans.scope_spans[0].spans)
    raw = request.SerializeToString()
    spans = [
        (r, s, i, item.SerializeToString())
        for r, resource_spans in enumerate(request.resource_spans)
        for s, scope in enumerate(resource_spans.scope_spans)
        for i, item in enumerate(scope.spans)
    ]
    needles = [b"phonoglyph.operation", b"\x12", b"zz"]
    needles += [raw[start : start + rng.randint(1, 6)] for start in (rng.randrange(len(raw)) for _ in range(300))]
    for needle in needles:
        received, candidates = spans_containing(raw, needle)
        assert received == len(spans)
        assert [(r, s, i, raw[start:end]) for r, s, i, start, end in candidates] == [
            (r, s, i, item) for r, s, i, item in spans if needle in item
        ]


def test_spans_containing_reads_a_span_key_written_in_more_bytes_than_needed():
    """Protobuf takes a tag varint written in more bytes than it needs (0x92 0x00 for 0x12): so does the scan."""
    tagged = span({"phonoglyph.operation": "render"}).SerializeToString()
    scope = b"\x92\x00" + encode_varint(len(tagged)) + tagged + b"\x12" + encode_varint(len(tagged)) + tagged
    resource = b"\x12" + encode_varint(len(scope)) + scope
    raw = b"\x0a" + encode_varint(len(resource)) + resource
    parsed = ExportTraceServiceRequest.FromString(raw).resource_spans[0].scope_spans[0].spans
    received, candidates = spans_containing(raw, b"phonoglyph.operation")
    assert received == len(parsed) == 2
    assert [(i, raw[start:end]) for _, _, i, start, end in candidates] == [
        (i, item.SerializeToString()) for i, item in enumerate(parsed)
    ]
