"""Audio features: level (RMS and peak dBFS), tempo by onset autocorrelation, spectral centroid."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from services.audio import spectrum
from services.audio.wav import Audio

_MIN_TEMPO_BPM = 60.0
_MAX_TEMPO_BPM = 200.0
_SILENCE_DBFS = -120.0
_SMOOTHING_KERNEL = np.hanning(5) / np.hanning(5).sum()  # onsets that fall between frames still line up


@dataclass(frozen=True)
class Analysis:
    duration_s: float
    sample_rate_hz: int
    channels: int
    rms_dbfs: float
    peak_dbfs: float
    tempo_bpm: float | None
    spectral_centroid_hz: float

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def analyse(audio: Audio) -> Analysis:
    mono = audio.mono().astype(np.float64)
    frequencies_hz, stft = spectrum.stft(mono, audio.sample_rate_hz)
    magnitude = np.abs(stft)
    return Analysis(
        duration_s=round(audio.duration_s, 6),
        sample_rate_hz=audio.sample_rate_hz,
        channels=audio.channels,
        rms_dbfs=_dbfs(float(np.sqrt(np.mean(np.square(audio.samples, dtype=np.float64))))),
        peak_dbfs=_dbfs(float(np.max(np.abs(audio.samples)))),
        tempo_bpm=estimate_tempo_bpm(magnitude, audio.sample_rate_hz),
        spectral_centroid_hz=spectral_centroid_hz(magnitude, frequencies_hz),
    )


def _dbfs(level: float) -> float:
    if level <= 0.0:
        return _SILENCE_DBFS
    return round(float(max(20.0 * np.log10(level), _SILENCE_DBFS)), 3) + 0.0


def onset_strength(magnitude: np.ndarray) -> np.ndarray:
    """Spectral flux of the log-compressed magnitude: one value per STFT frame."""
    compressed = np.log1p(100.0 * magnitude)
    flux = np.maximum(np.diff(compressed, axis=-1), 0.0).sum(axis=-2)
    return np.concatenate(([0.0], flux))


def estimate_tempo_bpm(magnitude: np.ndarray, sample_rate_hz: int) -> float | None:
    """Tempo from the autocorrelation peak of the onset envelope, between 60 and 200 BPM.

    None when the envelope has no periodicity (silence, a steady tone).
    """
    envelope = np.convolve(onset_strength(magnitude), _SMOOTHING_KERNEL, mode="same")
    envelope = envelope - envelope.mean()
    frame_rate_hz = sample_rate_hz / spectrum.HOP_SAMPLES
    min_lag = int(np.floor(frame_rate_hz * 60.0 / _MAX_TEMPO_BPM))
    max_lag = int(np.ceil(frame_rate_hz * 60.0 / _MIN_TEMPO_BPM))
    if envelope.size <= max_lag + 1 or not np.any(envelope):
        return None
    padded = np.fft.rfft(envelope, n=2 * envelope.size)
    autocorrelation = np.fft.irfft(padded * np.conj(padded))[: envelope.size]
    if autocorrelation[0] <= 0.0:
        return None
    window = autocorrelation[min_lag : max_lag + 1]
    best = int(np.argmax(window))
    if window[best] <= 0.1 * autocorrelation[0]:
        return None
    lag = float(min_lag + best)
    if 0 < best < window.size - 1:  # parabolic interpolation around the peak
        left, centre, right = window[best - 1], window[best], window[best + 1]
        denominator = left - 2.0 * centre + right
        if denominator < 0.0:
            lag += 0.5 * (left - right) / denominator
    return round(float(60.0 * frame_rate_hz / lag), 2)


def spectral_centroid_hz(magnitude: np.ndarray, frequencies_hz: np.ndarray) -> float:
    """Magnitude-weighted mean frequency over the whole signal."""
    total = float(magnitude.sum())
    if total <= 0.0:
        return 0.0
    return round(float((magnitude.sum(axis=-1) * frequencies_hz).sum() / total), 3)
