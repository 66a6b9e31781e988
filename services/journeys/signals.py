"""WAV files generated in memory: a tone, some noise and a click on every beat."""

from __future__ import annotations

import random

import numpy as np

from services.audio.wav import encode

SAMPLE_RATE_HZ = 22050


def make_track(rng: random.Random, *, duration_s: float | None = None) -> tuple[bytes, float]:
    """A WAV file and the tempo (BPM) of its clicks."""
    duration_s = duration_s or rng.uniform(2.0, 4.0)
    tempo_bpm = rng.choice((84.0, 96.0, 110.0, 120.0, 128.0, 140.0))
    noise = np.random.default_rng(rng.randrange(2**32))
    t_s = np.arange(int(duration_s * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    tone = 0.25 * np.sin(2 * np.pi * rng.choice((220.0, 330.0, 440.0)) * t_s)
    samples = tone + 0.02 * noise.standard_normal(t_s.size)
    click = noise.uniform(-0.6, 0.6, 64) * np.exp(-np.arange(64) / 12.0)
    for beat_s in np.arange(0.0, duration_s, 60.0 / tempo_bpm):
        start = int(beat_s * SAMPLE_RATE_HZ)
        samples[start : start + 64] += click[: samples.size - start]
    channels = rng.choice((1, 2))
    frames = samples if channels == 1 else np.stack([samples, samples * 0.8], axis=1)
    return encode(frames, SAMPLE_RATE_HZ, bits_per_sample=rng.choice((16, 24))), tempo_bpm


BAD_UPLOADS = ("wrong_content_type", "not_audio", "corrupt_audio", "empty_file")


def make_bad_upload(kind: str, rng: random.Random) -> tuple[bytes, str]:
    """(body, content type) of an upload the API must refuse, and why."""
    good, _tempo = make_track(rng, duration_s=1.0)
    if kind == "wrong_content_type":
        return good, "text/plain"
    if kind == "not_audio":
        return b"%PDF-1.7 not a sound at all" * 10, "audio/wav"
    if kind == "corrupt_audio":
        return good[: len(good) // 2], "audio/wav"  # the data chunk is cut short
    if kind == "empty_file":
        return b"", "audio/wav"
    raise ValueError(kind)
