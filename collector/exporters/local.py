"""The embedded local event store: where events go when no ``POSTHOG_API_KEY`` is set.

``LocalStoreExporter`` implements the Exporter protocol over its own SQLite file (WAL),
idempotent by uuid like PostHog's de-duplication, and offers the read side the CLI uses:
``read_events`` (also for ``--follow``), ``event_counts`` and ``funnel``.

``funnel(events, steps)`` is the one funnel computation: a pure function of event dicts, used by
the store's ``funnel`` (``phonoglyph-collector funnel``) and by the local stack's demo summary
(``tools.stack.summary``), so both count the same way.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.exporters import RetryLater

__all__ = ["FunnelStep", "LocalStoreExporter", "funnel"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL,
    distinct_id TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    properties TEXT NOT NULL,
    stored_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_event_timestamp ON events (event, timestamp);
"""


@dataclass(frozen=True)
class FunnelStep:
    event: str
    count: int
    conversion_from_first: float
    """Share of the first step's distinct ids that reached this step (1.0 for the first)."""
    conversion_from_previous: float


def funnel(events: Iterable[Mapping], steps: Sequence[str]) -> list[FunnelStep]:
    """How many distinct ids reached each step in order (by event timestamp), and the conversions.

    ``events`` are mappings with ``event``, ``distinct_id`` and ``timestamp`` (ISO 8601 UTC strings,
    which order as text). A distinct id reaches step k when it has an event ``steps[k]`` at or after
    the time it reached step k-1; the earliest such event counts, so every id is given its best chance.
    The order of ``events`` does not matter.
    """
    if not steps:
        raise ValueError("a funnel needs at least one step")
    wanted = set(steps)
    times: dict[str, dict[str, list[str]]] = {}
    for event in events:
        if event["event"] in wanted:
            times.setdefault(event["distinct_id"], {}).setdefault(event["event"], []).append(event["timestamp"])
    reached = [0] * len(steps)
    for per_event in times.values():
        at = ""
        for index, step in enumerate(steps):
            later = min((t for t in per_event.get(step, ()) if t >= at), default=None)
            if later is None:
                break
            reached[index] += 1
            at = later
    result = []
    for index, step in enumerate(steps):
        first, previous = reached[0], reached[index - 1] if index else reached[0]
        result.append(
            FunnelStep(
                event=step,
                count=reached[index],
                conversion_from_first=reached[index] / first if first else 0.0,
                conversion_from_previous=reached[index] / previous if previous else 0.0,
            )
        )
    return result


class LocalStoreExporter:
    def __init__(self, path: str | os.PathLike, *, clock=time.time, create: bool = True) -> None:
        """Open (or create) the store at path; ``create=False``: a missing file is a ``FileNotFoundError``
        (a reader never leaves an empty store behind)."""
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        if not create and not self.path.is_file():
            raise FileNotFoundError(f"no local event store at {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    # -- Exporter --------------------------------------------------------------------------

    def export(self, batch: Sequence[Mapping[str, Any]]) -> None:
        now = self._clock()
        rows = [
            (
                event["uuid"],
                event["event"],
                event["distinct_id"],
                event["timestamp"],
                json.dumps(event.get("properties") or {}, separators=(",", ":"), ensure_ascii=False),
                now,
            )
            for event in batch
        ]
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        "INSERT OR IGNORE INTO events (uuid, event, distinct_id, timestamp, properties, stored_at)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise RetryLater(f"local event store write failed: {exc}") from exc

    def shutdown(self) -> None:
        with self._lock:
            self._db.close()

    # -- read side (CLI) -------------------------------------------------------------------

    def read_events(self, *, after_seq: int = 0, event: str | None = None, limit: int | None = None) -> list[dict]:
        """Stored events in arrival order, each with its ``seq`` (pass the last one back to follow)."""
        sql = "SELECT seq, uuid, event, distinct_id, timestamp, properties FROM events WHERE seq > ?"
        params: list = [after_seq]
        if event is not None:
            sql += " AND event = ?"
            params.append(event)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [
            {
                "seq": seq,
                "uuid": uuid,
                "event": name,
                "distinct_id": distinct_id,
                "timestamp": timestamp,
                "properties": json.loads(properties),
            }
            for seq, uuid, name, distinct_id, timestamp, properties in rows
        ]

    def event_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT event, count(*) FROM events GROUP BY event ORDER BY event").fetchall()
        return dict(rows)

    def funnel(self, steps: Sequence[str]) -> list[FunnelStep]:
        """``funnel`` over the stored events of the given steps."""
        wanted = sorted(set(steps))
        placeholders = ",".join("?" * len(wanted))
        with self._lock:
            rows = self._db.execute(
                f"SELECT distinct_id, event, timestamp FROM events WHERE event IN ({placeholders})", wanted
            ).fetchall()
        return funnel(({"distinct_id": d, "event": e, "timestamp": t} for d, e, t in rows), steps)
