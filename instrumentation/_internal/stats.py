"""Counters of what the pipeline dropped or failed to do: nothing is dropped silently."""

from __future__ import annotations

import os
import threading
from collections import Counter


class PipelineStats:
    """Thread-safe named counters (``spans_dropped``, ``event_records_dropped``, ``export_failures``...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def increment(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()


STATS = PipelineStats()
"""The process-wide counters; ``instrumentation.testing.pipeline_stats()`` reads them."""

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=STATS._after_fork_in_child)
