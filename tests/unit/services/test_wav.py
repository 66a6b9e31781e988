import struct

import numpy as np
import pytest

from services.audio import wav
from tests.unit.services.signals import SAMPLE_RATE_HZ, sine


@pytest.mark.parametrize(("bits", "tolerance"), [(16, 1e-4), (24, 1e-6), (32, 1e-7)])
def test_encode_decode_round_trip(bits: int, tolerance: float) -> None:
    stereo = np.stack([sine(440, 0.5), sine(660, 0.5, amplitude=0.25)], axis=1)
    audio = wav.decode(wav.encode(stereo, SAMPLE_RATE_HZ, bits_per_sample=bits))
    assert audio.sample_rate_hz == SAMPLE_RATE_HZ
    assert audio.channels == 2
    assert audio.duration_s == pytest.approx(0.5)
    assert np.max(np.abs(audio.samples - stereo)) < tolerance


def test_odd_sized_payload_is_padded_and_still_decodes() -> None:
    data = wav.encode(np.array([0.5, -0.5, 0.25]), 8000, bits_per_sample=24)  # 9 bytes of samples
    assert len(data) % 2 == 0
    assert wav.decode(data).samples[:, 0] == pytest.approx([0.5, -0.5, 0.25], abs=1e-6)


def test_eight_bit_unsigned_pcm() -> None:
    header = struct.pack("<HHIIHH", 1, 1, 8000, 8000, 1, 8)
    payload = bytes([128, 255, 0, 192])
    data = b"RIFF" + struct.pack("<I", 36 + 4) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + header
    data += b"data" + struct.pack("<I", 4) + payload
    assert wav.decode(data).samples[:, 0] == pytest.approx([0.0, 127 / 128, -1.0, 0.5])


def _wav_with(fmt: bytes, data: bytes, *, declared_data_bytes: int | None = None) -> bytes:
    size = len(data) if declared_data_bytes is None else declared_data_bytes
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


PCM16_MONO = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"ID3\x03 an mp3 file", "not_audio"),
        (b"RIFF\x10\x00\x00\x00AVI LIST", "not_audio"),
        (b"RIFF\x04\x00\x00\x00WAVE", "corrupt_audio"),  # no fmt chunk
        (_wav_with(PCM16_MONO, b"\x00\x01" * 100, declared_data_bytes=400), "corrupt_audio"),  # truncated
        (_wav_with(PCM16_MONO, b"\x00\x01\x02"), "corrupt_audio"),  # partial frame
        (_wav_with(PCM16_MONO[:10], b"\x00\x00"), "corrupt_audio"),  # short fmt chunk
        (_wav_with(struct.pack("<HHIIHH", 1, 1, 8000, 16000, 4, 16), b"\x00" * 8), "corrupt_audio"),  # align
        (_wav_with(struct.pack("<HHIIHH", 2, 1, 8000, 4000, 256, 4), b"\x00" * 256), "unsupported_encoding"),
        (_wav_with(struct.pack("<HHIIHH", 1, 1, 8000, 12000, 1, 12), b"\x00" * 6), "unsupported_encoding"),
        (_wav_with(PCM16_MONO, b""), "empty_audio"),
        (
            _wav_with(struct.pack("<HHIIHH", 3, 1, 8000, 32000, 4, 32), np.array([np.nan], "<f4").tobytes()),
            "corrupt_audio",
        ),
    ],
)
def test_bad_files_fail_with_a_precise_code(data: bytes, code: str) -> None:
    with pytest.raises(wav.AudioError) as caught:
        wav.decode(data)
    assert caught.value.code == code
    assert type(caught.value).__qualname__ == code  # operations report the class name as error.type
