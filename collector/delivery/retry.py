"""Retry policy and batch limits: pure functions of their inputs (clock and random injected)."""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BatchConfig", "RetryConfig", "expiry_cutoff", "next_delay"]


@dataclass(frozen=True)
class RetryConfig:
    """The Collector's retry_on_failure: capped exponential backoff with jitter.

    max_elapsed_time_s=None retries forever: events are never dropped for age.
    Unauthorized (401/403) waits a slow fixed unauthorized_interval_s instead.
    """

    initial_interval_s: float = 1.0
    max_interval_s: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.2
    max_elapsed_time_s: float | None = None
    unauthorized_interval_s: float = 300.0

    def __post_init__(self) -> None:
        if self.initial_interval_s <= 0 or self.max_interval_s < self.initial_interval_s:
            raise ValueError("need 0 < initial_interval_s <= max_interval_s")
        if self.multiplier < 1:
            raise ValueError("multiplier must be >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if self.max_elapsed_time_s is not None and self.max_elapsed_time_s <= 0:
            raise ValueError("max_elapsed_time_s must be positive or None")
        if self.unauthorized_interval_s <= 0:
            raise ValueError("unauthorized_interval_s must be positive")


@dataclass(frozen=True)
class BatchConfig:
    """Delivery batches: bounded by count and bytes (PostHog takes 20 MiB a request, ~1 MiB an event).

    max_delay_s: after a wake-up, how long the worker lets a partial batch fill before sending.
    """

    max_events: int = 2000
    max_bytes: int = 4 * 2**20
    max_event_bytes: int = 900 * 2**10
    max_delay_s: float = 0.2

    def __post_init__(self) -> None:
        if self.max_events < 1:
            raise ValueError("max_events must be >= 1")
        if not 0 < self.max_event_bytes <= self.max_bytes < 5 * 2**20:
            raise ValueError("need 0 < max_event_bytes <= max_bytes < 5 MiB")
        if self.max_delay_s < 0:
            raise ValueError("max_delay_s must be >= 0")


def next_delay(
    config: RetryConfig,
    failures: int,
    *,
    retry_after_s: float | None = None,
    unauthorized: bool = False,
    random: Callable[[], float] = _random.random,
) -> float:
    """Seconds to wait after the failures-th consecutive failure (1 = the first).

    min(initial * multiplier**(failures-1), max_interval), spread by +-jitter, and never
    less than the server's Retry-After. Unauthorized waits the fixed slow interval.
    """
    if unauthorized:
        base = config.unauthorized_interval_s
    else:
        exponent = max(0, failures - 1)
        try:
            base = min(config.initial_interval_s * config.multiplier**exponent, config.max_interval_s)
        except OverflowError:
            base = config.max_interval_s
    delay = base * (1 + config.jitter * (2 * random() - 1))
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


def expiry_cutoff(config: RetryConfig, *, now: float) -> float | None:
    """Events enqueued before this time have waited over max_elapsed_time_s (None: never give up)."""
    return None if config.max_elapsed_time_s is None else now - config.max_elapsed_time_s
