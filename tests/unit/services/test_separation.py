import numpy as np
import pytest

from services.audio import separation, wav
from tests.unit.services.signals import SAMPLE_RATE_HZ, click_track, sine


def _energy(samples: np.ndarray) -> float:
    return float(np.sum(np.square(samples, dtype=np.float64)))


@pytest.fixture(scope="module")
def mix() -> tuple[np.ndarray, np.ndarray]:
    return sine(440, 3.0, amplitude=0.4), click_track(120, 3.0)


@pytest.fixture(scope="module")
def stems(mix: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    tone, clicks = mix
    audio = wav.Audio(samples=(tone + clicks).astype(np.float32)[:, None], sample_rate_hz=SAMPLE_RATE_HZ)
    return {name: samples[:, 0] for name, samples in separation.separate(audio).items()}


def test_harmonic_stem_is_the_sine(mix: tuple[np.ndarray, np.ndarray], stems: dict[str, np.ndarray]) -> None:
    tone, _clicks = mix
    assert _energy(stems["harmonic"] - tone) < 0.01 * _energy(tone)


def test_percussive_stem_is_the_clicks(mix: tuple[np.ndarray, np.ndarray], stems: dict[str, np.ndarray]) -> None:
    tone, clicks = mix
    assert _energy(stems["percussive"] - clicks) < 0.3 * _energy(clicks)
    assert _energy(stems["percussive"]) < 0.5 * _energy(tone)  # the sine (most of the energy) is not in it


def test_stems_sum_to_the_input(mix: tuple[np.ndarray, np.ndarray], stems: dict[str, np.ndarray]) -> None:
    tone, clicks = mix
    assert np.max(np.abs(stems["harmonic"] + stems["percussive"] - (tone + clicks))) < 1e-4


def test_each_channel_is_separated() -> None:
    stereo = np.stack([sine(440, 1.0), click_track(120, 1.0)], axis=1).astype(np.float32)
    out = separation.separate(wav.Audio(samples=stereo, sample_rate_hz=SAMPLE_RATE_HZ))
    assert set(out) == set(separation.STEM_NAMES)
    assert all(samples.shape == stereo.shape for samples in out.values())
    assert _energy(out["harmonic"][:, 0]) > 10 * _energy(out["harmonic"][:, 1])
