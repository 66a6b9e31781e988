"""The job queue's depth and age as OpenTelemetry observable gauges (the metric names live here).

A dead or stuck worker shows no failed operation at all: jobs simply pile up ``queued``. These
gauges make that visible to alert rules. They are observed by the api process (which outlives a
dead worker), one indexed query per collection (``jobs.queue_stats``), through the OTel API only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from services.store import jobs
from services.store.database import Database, now_s

METER_NAME = "phonoglyph.services"
JOB_KIND = "phonoglyph.job.kind"
JOBS_QUEUED = "phonoglyph.jobs.queued"
"""Gauge, ``{job}``: jobs waiting for a worker, by ``phonoglyph.job.kind`` (every kind, zero included)."""
JOBS_OLDEST_QUEUED_AGE = "phonoglyph.jobs.oldest_queued_age"
"""Gauge, ``s``: how long the oldest queued job of each kind has waited (0 when none waits)."""
JOBS_ORPHANED = "phonoglyph.jobs.orphaned"
"""Gauge, ``{job}``: jobs still 'running' past their lease (their worker died or hangs), by kind."""

_REUSE_S = 1.0
"""The queue-depth gauge reads the queue at each collection; the other gauges, collected right after
it, reuse that read (one query per collection)."""


class JobQueueGauges:
    """Registers the gauges on ``meter``; each collection reads the queue once."""

    def __init__(self, db: Database, meter: Meter | None = None) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._stats: list[jobs.QueueStats] = []
        self._read_at_s = float("-inf")
        meter = meter or metrics.get_meter(METER_NAME)
        meter.create_observable_gauge(
            JOBS_QUEUED, callbacks=[self._observe_queued], unit="{job}", description="Jobs waiting for a worker"
        )
        meter.create_observable_gauge(
            JOBS_OLDEST_QUEUED_AGE,
            callbacks=[self._observe_oldest_age],
            unit="s",
            description="How long the oldest queued job has waited",
        )
        meter.create_observable_gauge(
            JOBS_ORPHANED,
            callbacks=[self._observe_orphaned],
            unit="{job}",
            description="Jobs running past their lease: their worker died or hangs",
        )

    def _read(self, *, reuse_within_s: float | None = None) -> list[jobs.QueueStats]:
        with self._lock:
            now = now_s()
            if reuse_within_s is None or now - self._read_at_s > reuse_within_s:
                self._stats = jobs.queue_stats(self._db.read())
                self._read_at_s = now
            return self._stats

    def _observe_queued(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(stats.queued, {JOB_KIND: stats.kind}) for stats in self._read()]

    def _observe_orphaned(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(stats.orphaned, {JOB_KIND: stats.kind}) for stats in self._read(reuse_within_s=_REUSE_S)]

    def _observe_oldest_age(self, _options: CallbackOptions) -> Iterable[Observation]:
        now = now_s()
        return [
            Observation(
                max(0.0, now - stats.oldest_created_at) if stats.oldest_created_at is not None else 0.0,
                {JOB_KIND: stats.kind},
            )
            for stats in self._read(reuse_within_s=_REUSE_S)
        ]
