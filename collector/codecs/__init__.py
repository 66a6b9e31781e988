"""Codecs: bytes on the wire ↔ OTLP messages (``otlp``) and the protobuf framing underneath (``protowire``)."""
