"""Harmonic/percussive stem separation by median filtering of the STFT magnitude (Fitzgerald, 2010)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from services.audio import STEM_NAMES, spectrum
from services.audio.wav import Audio

HARMONIC_KERNEL_FRAMES = 17
PERCUSSIVE_KERNEL_BINS = 17
__all__ = ["STEM_NAMES", "separate"]


def separate(audio: Audio) -> dict[str, np.ndarray]:
    """Split audio into harmonic and percussive stems, each (frames, channels) float32.

    A harmonic sound is steady in time (a horizontal line in the spectrogram): a median across time
    keeps it. A percussive one is broadband and short (a vertical line): a median across frequency
    keeps it. Soft (Wiener) masks built from both split the original spectrum; the stems sum to the input.
    """
    frames = audio.samples.shape[0]
    channels_first = audio.samples.T.astype(np.float64)
    _frequencies_hz, stft = spectrum.stft(channels_first, audio.sample_rate_hz)
    magnitude = np.abs(stft)
    harmonic = ndimage.median_filter(magnitude, size=(1, 1, HARMONIC_KERNEL_FRAMES), mode="nearest")
    percussive = ndimage.median_filter(magnitude, size=(1, PERCUSSIVE_KERNEL_BINS, 1), mode="nearest")
    harmonic_power, percussive_power = np.square(harmonic), np.square(percussive)
    total_power = harmonic_power + percussive_power
    total_power[total_power == 0.0] = 1.0
    harmonic_mask = harmonic_power / total_power
    stems = {
        "harmonic": spectrum.istft(stft * harmonic_mask, audio.sample_rate_hz, frames),
        "percussive": spectrum.istft(stft * (1.0 - harmonic_mask), audio.sample_rate_hz, frames),
    }
    return {name: samples.T.astype(np.float32) for name, samples in stems.items()}
