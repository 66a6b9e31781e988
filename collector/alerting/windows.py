"""Bounded sliding windows for the alerting engine: counts and latency histograms in time buckets.

Ingest must stay cheap (docs/architecture.md, "Alerting"): an observation adds to the current bucket
of its series (O(1)), and a window's figure is summed over at most ``window_s / bucket_s`` buckets at
evaluation time. Buckets older than the longest window are dropped, so memory is bounded by the number
of series times the buckets per window, never by traffic. Latency is kept as counts in fixed
logarithmic bins (about 10 % apart), so a p95 is exact to within one bin and costs no sample storage.

Not thread-safe by themselves: the engine holds its lock around every call.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["CountWindow", "LatencyWindow", "latency_bin", "latency_bin_upper_ms"]

K = TypeVar("K", bound=Hashable)

_BIN_GROWTH = 1.1
_LOG_GROWTH = math.log(_BIN_GROWTH)
_MAX_BIN = 250  # 1.1**250 ms is far beyond any operation (about 68 years)


def latency_bin(value_ms: float) -> int:
    """The bin of a duration: 0 for <= 1 ms, else ceil(log_1.1(ms)), capped."""
    if not value_ms > 1.0:
        return 0
    return min(_MAX_BIN, math.ceil(math.log(value_ms) / _LOG_GROWTH - 1e-9))


def latency_bin_upper_ms(index: int) -> float:
    """The upper bound of a bin: every duration in it is at most this."""
    return _BIN_GROWTH**index


class CountWindow(Generic[K]):
    """Counters by key (completed/failed, all/5xx requests, a latency bin) per time bucket, over the last
    ``horizon_s``."""

    __slots__ = ("bucket_s", "_buckets", "_max_buckets")

    def __init__(self, bucket_s: float, horizon_s: float) -> None:
        self.bucket_s = bucket_s
        self._max_buckets = int(math.ceil(horizon_s / bucket_s)) + 1
        self._buckets: deque[tuple[int, dict[K, float]]] = deque()

    def add(self, now: float, name: K, amount: float = 1.0) -> None:
        index = int(now // self.bucket_s)
        buckets = self._buckets
        if not buckets or buckets[-1][0] < index:
            buckets.append((index, {}))
            while len(buckets) > self._max_buckets or buckets[0][0] <= index - self._max_buckets:
                buckets.popleft()
        counts = buckets[-1][1]  # a clock that went back counts in the newest bucket rather than reorder
        counts[name] = counts.get(name, 0.0) + amount

    def totals(self, now: float, window_s: float) -> dict[K, float]:
        """Sums over the buckets that start within the last ``window_s`` (the current one included)."""
        first = int((now - window_s) // self.bucket_s) + 1
        result: dict[K, float] = {}
        for index, counts in reversed(self._buckets):
            if index < first:
                break
            for name, amount in counts.items():
                result[name] = result.get(name, 0.0) + amount
        return result

    def empty(self, now: float) -> bool:
        """No bucket left inside the horizon (the series can be forgotten)."""
        return not self._buckets or self._buckets[-1][0] <= int(now // self.bucket_s) - self._max_buckets


class LatencyWindow:
    """A latency histogram (fixed log bins) per time bucket, over the last ``horizon_s``: a CountWindow
    keyed by bin."""

    __slots__ = ("_counts",)

    def __init__(self, bucket_s: float, horizon_s: float) -> None:
        self._counts: CountWindow[int] = CountWindow(bucket_s, horizon_s)

    def add(self, now: float, value_ms: float) -> None:
        self._counts.add(now, latency_bin(value_ms))

    def add_to_bin(self, now: float, index: int, amount: float) -> None:
        """``amount`` durations of the bin ``index`` (``latency_bin``) at once."""
        self._counts.add(now, index, amount)

    def quantile(self, now: float, window_s: float, q: float) -> tuple[float | None, int]:
        """(the q-quantile's bin upper bound in ms, sample count) over the window; None when empty.

        Nearest rank, ceil(q * n), but never the largest sample when there are two or more: one outlier
        (one slow upload) is never the quantile, however few samples the window holds.
        """
        merged = self._counts.totals(now, window_s)
        total = int(sum(merged.values()))
        if total == 0:
            return None, 0
        rank = max(1, min(math.ceil(q * total - 1e-9), total - 1))
        seen = 0.0
        for key in sorted(merged):
            seen += merged[key]
            if seen >= rank:
                return latency_bin_upper_ms(key), total
        return latency_bin_upper_ms(max(merged)), total  # pragma: no cover - unreachable

    def empty(self, now: float) -> bool:
        return self._counts.empty(now)
