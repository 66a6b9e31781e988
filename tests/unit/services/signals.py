"""Synthetic test signals for the DSP tests."""

from __future__ import annotations

import numpy as np

SAMPLE_RATE_HZ = 22050


def times_s(duration_s: float, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    return np.arange(int(duration_s * sample_rate_hz)) / sample_rate_hz


def sine(frequency_hz: float, duration_s: float, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * frequency_hz * times_s(duration_s))


def click_track(tempo_bpm: float, duration_s: float, amplitude: float = 0.8, seed: int = 7) -> np.ndarray:
    """Short decaying noise bursts on every beat."""
    out = np.zeros(int(duration_s * SAMPLE_RATE_HZ))
    burst = np.random.default_rng(seed).uniform(-1, 1, 64) * np.exp(-np.arange(64) / 12.0) * amplitude
    for beat_s in np.arange(0.0, duration_s, 60.0 / tempo_bpm):
        start = int(beat_s * SAMPLE_RATE_HZ)
        out[start : start + 64] += burst[: len(out) - start]
    return out
