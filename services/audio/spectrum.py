"""The short-time Fourier transform settings every audio feature shares."""

from __future__ import annotations

import numpy as np
from scipy import signal

WINDOW_SAMPLES = 1024
HOP_SAMPLES = 256


def stft(samples: np.ndarray, sample_rate_hz: int) -> tuple[np.ndarray, np.ndarray]:
    """STFT over the last axis: (frequencies_hz, complex spectrum [..., bins, frames])."""
    frequencies_hz, _times_s, spectrum = signal.stft(
        samples,
        fs=sample_rate_hz,
        nperseg=WINDOW_SAMPLES,
        noverlap=WINDOW_SAMPLES - HOP_SAMPLES,
        boundary="even",
        padded=True,
    )
    return frequencies_hz, spectrum


def istft(spectrum: np.ndarray, sample_rate_hz: int, frames: int) -> np.ndarray:
    """Inverse of ``stft``, trimmed to ``frames`` samples."""
    _times_s, samples = signal.istft(
        spectrum,
        fs=sample_rate_hz,
        nperseg=WINDOW_SAMPLES,
        noverlap=WINDOW_SAMPLES - HOP_SAMPLES,
        boundary=True,
    )
    return samples[..., :frames]
