"""collector.alerting.windows: the latency quantile never takes the window's slowest sample."""

import pytest

from collector.alerting.windows import LatencyWindow
from tests.unit.collector.alerting.helpers import T0


@pytest.mark.parametrize("fast", [1, 4, 9, 30])
def test_one_outlier_is_never_the_p95_however_few_samples(fast: int) -> None:
    window = LatencyWindow(5, 600)
    for _ in range(fast):
        window.add(T0, 100.0)
    window.add(T0, 90_000.0)
    p95, count = window.quantile(T0, 600, 0.95)
    assert count == fast + 1 and p95 is not None and p95 < 111


def test_two_slow_samples_among_five_are_the_p95() -> None:
    window = LatencyWindow(5, 600)
    for value in (100.0, 100.0, 100.0, 41_000.0, 41_000.0):
        window.add(T0, value)
    p95, count = window.quantile(T0, 600, 0.95)
    assert count == 5 and p95 is not None and p95 >= 41_000


def test_a_single_sample_is_its_own_quantile() -> None:
    window = LatencyWindow(5, 600)
    window.add(T0, 250.0)
    p95, count = window.quantile(T0, 600, 0.95)
    assert count == 1 and p95 is not None and p95 >= 250
