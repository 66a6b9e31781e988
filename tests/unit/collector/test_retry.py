"""The retry policy: capped exponential backoff, jitter bounds, Retry-After floor, slow 401s."""

import pytest

from collector.delivery.retry import BatchConfig, RetryConfig, expiry_cutoff, next_delay

NO_JITTER = RetryConfig(initial_interval_s=1, max_interval_s=60, multiplier=2, jitter=0)


@pytest.mark.parametrize(
    ("failures", "delay_s"),
    [(1, 1), (2, 2), (3, 4), (4, 8), (6, 32), (7, 60), (50, 60), (10_000, 60)],
)
def test_backoff_doubles_up_to_the_cap(failures, delay_s):
    assert next_delay(NO_JITTER, failures) == delay_s


def test_retry_after_is_a_floor_not_a_cap():
    assert next_delay(NO_JITTER, 1, retry_after_s=30) == 30
    assert next_delay(NO_JITTER, 7, retry_after_s=5) == 60
    assert next_delay(NO_JITTER, 7, retry_after_s=600) == 600


def test_jitter_spreads_within_its_bounds():
    config = RetryConfig(initial_interval_s=10, max_interval_s=10, jitter=0.2)
    assert next_delay(config, 1, random=lambda: 0.0) == pytest.approx(8)
    assert next_delay(config, 1, random=lambda: 0.5) == pytest.approx(10)
    assert next_delay(config, 1, random=lambda: 0.999999) == pytest.approx(12, rel=1e-5)


def test_unauthorized_waits_the_slow_fixed_interval():
    config = RetryConfig(jitter=0, unauthorized_interval_s=300)
    assert next_delay(config, 1, unauthorized=True) == 300
    assert next_delay(config, 9, unauthorized=True) == 300


def test_max_elapsed_time_none_never_gives_up():
    assert expiry_cutoff(RetryConfig(), now=1e9) is None
    assert expiry_cutoff(RetryConfig(max_elapsed_time_s=3600), now=10_000) == 6_400


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_interval_s": 0},
        {"initial_interval_s": 10, "max_interval_s": 5},
        {"multiplier": 0.5},
        {"jitter": 1.0},
        {"max_elapsed_time_s": 0},
        {"unauthorized_interval_s": 0},
    ],
)
def test_invalid_retry_config_is_refused(kwargs):
    with pytest.raises(ValueError):
        RetryConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_events": 0}, {"max_bytes": 5 * 2**20}, {"max_event_bytes": 5 * 2**20}, {"max_delay_s": -1}],
)
def test_invalid_batch_config_is_refused(kwargs):
    with pytest.raises(ValueError):
        BatchConfig(**kwargs)


def test_batch_defaults_stay_under_posthog_limits():
    config = BatchConfig()
    assert (config.max_events, config.max_bytes, config.max_event_bytes) == (2000, 4 * 2**20, 900 * 2**10)
