import numpy as np
import pytest

from services.audio import analysis, wav
from tests.unit.services.signals import SAMPLE_RATE_HZ, click_track, sine


def _audio(samples: np.ndarray) -> wav.Audio:
    return wav.Audio(samples=samples.astype(np.float32)[:, None], sample_rate_hz=SAMPLE_RATE_HZ)


@pytest.mark.parametrize("tempo_bpm", [72.0, 96.0, 120.0, 137.0, 174.0])
def test_tempo_of_a_click_track_within_two_bpm(tempo_bpm: float) -> None:
    result = analysis.analyse(_audio(click_track(tempo_bpm, 5.0) + sine(220, 5.0, amplitude=0.1)))
    assert result.tempo_bpm == pytest.approx(tempo_bpm, abs=2.0)


def test_a_steady_tone_has_no_tempo() -> None:
    assert analysis.analyse(_audio(sine(440, 3.0))).tempo_bpm is None


@pytest.mark.parametrize("frequency_hz", [500.0, 1000.0, 3000.0])
def test_spectral_centroid_of_a_sine_is_its_frequency(frequency_hz: float) -> None:
    result = analysis.analyse(_audio(sine(frequency_hz, 2.0)))
    assert result.spectral_centroid_hz == pytest.approx(frequency_hz, rel=0.03)


def test_levels_of_a_half_scale_sine() -> None:
    result = analysis.analyse(_audio(sine(1000, 2.0, amplitude=0.5)))
    assert result.peak_dbfs == pytest.approx(-6.02, abs=0.05)
    assert result.rms_dbfs == pytest.approx(-9.03, abs=0.05)
    assert result.duration_s == pytest.approx(2.0)
    assert (result.sample_rate_hz, result.channels) == (SAMPLE_RATE_HZ, 1)


def test_silence_is_floored_not_minus_infinity() -> None:
    result = analysis.analyse(_audio(np.zeros(SAMPLE_RATE_HZ)))
    assert (result.rms_dbfs, result.peak_dbfs, result.tempo_bpm, result.spectral_centroid_hz) == (
        -120.0,
        -120.0,
        None,
        0.0,
    )


def test_result_is_plain_json_types() -> None:
    result = analysis.analyse(_audio(click_track(120, 3.0))).to_dict()
    assert all(type(value) in (int, float, type(None)) for value in result.values())
