"""WAV (RIFF) decoding and encoding: PCM 8/16/24/32-bit integer and 32/64-bit float.

A small parser of our own rather than ``scipy.io.wavfile`` so that every way a file can be wrong
maps to one precise error code (``not_audio``, ``corrupt_audio``, ``unsupported_encoding``,
``empty_audio``) before any sample is decoded.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np

from services.coded_error import CodedError

_FORMAT_PCM = 1
_FORMAT_FLOAT = 3
_FORMAT_EXTENSIBLE = 0xFFFE
_MAX_CHANNELS = 16


class AudioError(CodedError):
    """Audio that cannot be used; ``code`` is the machine-readable reason.

    Raised as a subclass named by the code (``AudioError("corrupt_audio", ...)`` is an instance of
    a class ``corrupt_audio``), so an operation that fails with it reports ``error.type`` = the code.
    """

    code: str = "audio_error"


@dataclass(frozen=True)
class WavInfo:
    """What the header of a WAV file says, checked against the data it holds."""

    sample_rate_hz: int
    channels: int
    bits_per_sample: int
    format_tag: int
    frames: int
    data_offset: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate_hz


@dataclass(frozen=True)
class Audio:
    """Decoded audio: float32 samples in [-1, 1], shape (frames, channels)."""

    samples: np.ndarray
    sample_rate_hz: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / self.sample_rate_hz

    def mono(self) -> np.ndarray:
        return self.samples.mean(axis=1, dtype=np.float32)


def read_info(data: bytes) -> WavInfo:
    """Parse and check the RIFF/WAVE header and chunk layout without decoding samples."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioError("not_audio", "the data is not a RIFF/WAVE file")
    offset = 12
    fmt: tuple[int, int, int, int, int] | None = None
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (chunk_bytes,) = struct.unpack_from("<I", data, offset + 4)
        body_offset = offset + 8
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(data, body_offset, chunk_bytes)
        elif chunk_id == b"data":
            if fmt is None:
                raise AudioError("corrupt_audio", "the data chunk comes before the fmt chunk")
            if body_offset + chunk_bytes > len(data):
                raise AudioError("corrupt_audio", "the data chunk is truncated")
            format_tag, channels, sample_rate_hz, bits, block_align = fmt
            if chunk_bytes % block_align:
                raise AudioError("corrupt_audio", "the data chunk holds a partial frame")
            frames = chunk_bytes // block_align
            if frames == 0:
                raise AudioError("empty_audio", "the file holds no samples")
            return WavInfo(sample_rate_hz, channels, bits, format_tag, frames, body_offset)
        offset = body_offset + chunk_bytes + (chunk_bytes & 1)
    raise AudioError("corrupt_audio", "no data chunk" if fmt else "no fmt chunk")


def _parse_fmt(data: bytes, offset: int, chunk_bytes: int) -> tuple[int, int, int, int, int]:
    if chunk_bytes < 16 or offset + chunk_bytes > len(data):
        raise AudioError("corrupt_audio", "the fmt chunk is truncated")
    format_tag, channels, sample_rate_hz, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", data, offset)
    if format_tag == _FORMAT_EXTENSIBLE:
        if chunk_bytes < 40:
            raise AudioError("corrupt_audio", "the extensible fmt chunk is truncated")
        (format_tag,) = struct.unpack_from("<H", data, offset + 24)
    if format_tag not in (_FORMAT_PCM, _FORMAT_FLOAT):
        raise AudioError("unsupported_encoding", f"WAV format {format_tag:#x} is not PCM or float")
    valid_bits = {_FORMAT_PCM: (8, 16, 24, 32), _FORMAT_FLOAT: (32, 64)}[format_tag]
    if bits not in valid_bits:
        raise AudioError("unsupported_encoding", f"{bits}-bit samples are not supported")
    if not 1 <= channels <= _MAX_CHANNELS or sample_rate_hz == 0:
        raise AudioError("corrupt_audio", "the fmt chunk has an impossible channel count or rate")
    if block_align != channels * bits // 8:
        raise AudioError("corrupt_audio", "the fmt chunk's block alignment does not match")
    return format_tag, channels, sample_rate_hz, bits, block_align


def decode(data: bytes) -> Audio:
    """Decode a WAV file into float32 samples; raises AudioError with a code when it cannot."""
    info = read_info(data)
    sample_bytes = info.bits_per_sample // 8
    raw = memoryview(data)[info.data_offset : info.data_offset + info.frames * info.channels * sample_bytes]
    samples = _to_float(raw, info.format_tag, info.bits_per_sample)
    samples = samples.reshape(info.frames, info.channels)
    if not np.isfinite(samples).all():
        raise AudioError("corrupt_audio", "the file holds non-finite samples")
    return Audio(samples=samples, sample_rate_hz=info.sample_rate_hz)


def _to_float(raw: memoryview, format_tag: int, bits: int) -> np.ndarray:
    if format_tag == _FORMAT_FLOAT:
        return np.frombuffer(raw, dtype="<f4" if bits == 32 else "<f8").astype(np.float32)
    if bits == 8:
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if bits == 16:
        return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if bits == 24:
        triples = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        values = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        values = np.where(values & 0x800000, values - 0x1000000, values)
        return values.astype(np.float32) / 8388608.0
    return (np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)


def encode(samples: np.ndarray, sample_rate_hz: int, *, bits_per_sample: int = 16) -> bytes:
    """Encode float samples (frames,) or (frames, channels) as a PCM (16/24-bit) or float (32-bit) WAV."""
    frames = np.asarray(samples, dtype=np.float64)
    if frames.ndim == 1:
        frames = frames[:, None]
    channels = frames.shape[1]
    clipped = np.clip(frames, -1.0, 1.0)
    if bits_per_sample == 16:
        payload = (clipped * 32767.0).round().astype("<i2").tobytes()
        format_tag = _FORMAT_PCM
    elif bits_per_sample == 24:
        ints = (clipped * 8388607.0).round().astype("<i4")
        payload = ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
        format_tag = _FORMAT_PCM
    elif bits_per_sample == 32:
        payload = frames.astype("<f4").tobytes()
        format_tag = _FORMAT_FLOAT
    else:
        raise ValueError(f"cannot encode {bits_per_sample}-bit samples")
    block_align = channels * bits_per_sample // 8
    pad = b"\x00" * (len(payload) & 1)
    out = io.BytesIO()
    out.write(b"RIFF" + struct.pack("<I", 36 + len(payload) + len(pad)) + b"WAVE")
    out.write(
        b"fmt "
        + struct.pack(
            "<IHHIIHH",
            16,
            format_tag,
            channels,
            sample_rate_hz,
            sample_rate_hz * block_align,
            block_align,
            bits_per_sample,
        )
    )
    out.write(b"data" + struct.pack("<I", len(payload)) + payload + pad)
    return out.getvalue()
