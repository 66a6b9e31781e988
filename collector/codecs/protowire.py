"""Protobuf wire format, by hand: one varint codec and a framing scanner that never builds messages.

The scanner walks an ``ExportTraceServiceRequest``'s framing (request → resource_spans → scope_spans →
spans) and reports which spans contain a byte string, so that the mapping builds message objects for
tagged spans only (docs/architecture.md "Collector pipeline").
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["decode_varint", "encode_varint", "fields", "length_delimited", "skip_field", "spans_containing"]

WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_LENGTH_DELIMITED = 2
WIRE_FIXED32 = 5


def encode_varint(value: int) -> bytes:
    """A non-negative integer as a base-128 varint."""
    if value < 0:
        raise ValueError("varints here are unsigned")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``buf[pos]`` → (value, position after it). IndexError when it runs off the end."""
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def skip_field(buf: bytes, pos: int, wire_type: int) -> int:
    """The position after a field's value that is not length-delimited."""
    if wire_type == WIRE_VARINT:
        return decode_varint(buf, pos)[1]
    if wire_type == WIRE_FIXED64:
        return pos + 8
    if wire_type == WIRE_FIXED32:
        return pos + 4
    raise ValueError("unexpected wire type")  # groups: never in OTLP


def fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """Every field of the message in ``buf[start:end]``: (field number, wire type, start of its key, start
    of its value, end). A length-delimited value is ``buf[value start:end]`` without its length.
    ValueError or IndexError when the bytes are not fields."""
    pos = start
    while pos < end:
        key_start = pos
        key, pos = decode_varint(buf, pos)
        wire_type = key & 7
        if wire_type == WIRE_LENGTH_DELIMITED:
            length, pos = decode_varint(buf, pos)
            value_start, pos = pos, pos + length
        else:
            value_start, pos = pos, skip_field(buf, pos, wire_type)
        if pos > end:
            raise ValueError("truncated field")
        yield key >> 3, wire_type, key_start, value_start, pos


def length_delimited(buf: bytes, start: int, end: int, field_number: int) -> Iterator[tuple[int, int]]:
    """(start, end) of every length-delimited occurrence of ``field_number`` in ``buf[start:end]``."""
    pos = start
    while pos < end:
        key, pos = decode_varint(buf, pos)
        wire_type = key & 7
        if wire_type == WIRE_LENGTH_DELIMITED:
            length, pos = decode_varint(buf, pos)
            if key >> 3 == field_number:
                yield pos, pos + length
            pos += length
        else:
            pos = skip_field(buf, pos, wire_type)
    if pos != end:
        raise ValueError("truncated field")


def spans_containing(raw_body: bytes, needle: bytes) -> tuple[int, list[tuple[int, int, int, int, int]]]:
    """Walk an ``ExportTraceServiceRequest``'s framing only and return the span count and, for each span
    whose bytes contain ``needle``, (resource index, scope index, span index, start, end): the span is
    ``request.resource_spans[r].scope_spans[s].spans[i]`` of the request parsed from these bytes (protobuf
    appends each occurrence of a repeated field, in order). ValueError or IndexError when the bytes are not
    that framing."""
    received = 0
    candidates: list[tuple[int, int, int, int, int]] = []
    find = raw_body.find
    needle_length = len(needle)
    for r, (r_start, r_end) in enumerate(length_delimited(raw_body, 0, len(raw_body), 1)):
        # the next occurrence of the needle in the resource entry (r_end: none): one find per hit, not per span
        hit = find(needle, r_start, r_end)
        if hit < 0:
            hit = r_end
        for s, (s_start, s_end) in enumerate(length_delimited(raw_body, r_start, r_end, 2)):
            first = received  # the scope's first span, counted over the whole request
            # the hot loop, inlined: one iteration per span; a span's one-byte key (0x12: field 2,
            # length-delimited) and a one- or two-byte length first (spans are mostly 128 bytes to 16 KiB)
            pos = s_start
            while pos < s_end:
                key = raw_body[pos]
                if key == 0x12:
                    length = raw_body[pos + 1]
                    if length < 0x80:
                        pos += 2
                    elif raw_body[pos + 2] < 0x80:
                        length = (length & 0x7F) | (raw_body[pos + 2] << 7)
                        pos += 3
                    else:
                        length, pos = decode_varint(raw_body, pos + 1)
                else:
                    key, pos = decode_varint(raw_body, pos)
                    if key & 7 != WIRE_LENGTH_DELIMITED:
                        pos = skip_field(raw_body, pos, key & 7)
                        continue
                    length, pos = decode_varint(raw_body, pos)
                    if key != 0x12:  # the scope's other fields
                        pos += length
                        continue
                received += 1
                span_end = pos + length
                if hit < span_end:
                    if hit < pos:  # in the resource's or a scope's own fields, or across a span's end
                        hit = find(needle, pos, r_end)
                        if hit < 0:
                            hit = r_end
                    if hit + needle_length <= span_end:
                        candidates.append((r, s, received - 1 - first, pos, span_end))
                        hit = find(needle, span_end, r_end)
                        if hit < 0:
                            hit = r_end
                pos = span_end
            if pos != s_end:
                raise ValueError("truncated field")
    return received, candidates
