"""The alerting state in SQLite (``alerts.db`` in the collector's data dir), kept across restarts.

Tables: ``alerts`` (one row per pending or firing instance: rule, subject, since when, last figure,
example trace ids, when last notified), ``history`` (every firing and resolution, newest kept up to a
bound), ``open_starts`` (the operations started and not yet finished, for ``stalled``), ``finished`` (recent
outcomes of operations known to have starts, so that a start arriving after its outcome, even across a
restart, opens nothing; pruned by age and by row count) and
``notifications`` (the durable notification outbox: one row per transition and notifier, deleted once
delivered). A transition, its history row and its notification rows commit in one transaction, so a
crash never loses a notification nor records one twice.

Same habits as the delivery outbox: WAL with ``synchronous=NORMAL``, one connection behind a Python
lock (one writer), explicit ``BEGIN IMMEDIATE`` transactions. The open-start and finished tables
are written as deltas (rows added and removed since the last evaluation), never per event.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ALERTS_FILE", "AlertStore", "InstanceRow", "NotificationRow", "OpenStart"]

ALERTS_FILE = "alerts.db"
HISTORY_LIMIT = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    rule TEXT NOT NULL,
    subject TEXT NOT NULL,
    state TEXT NOT NULL,
    active_since REAL NOT NULL,
    starts_at REAL,
    value REAL,
    trace_ids TEXT NOT NULL DEFAULT '[]',
    last_notified_at REAL,
    clear_since REAL,
    snapshot TEXT,
    PRIMARY KEY (rule, subject)
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    rule TEXT NOT NULL,
    subject TEXT NOT NULL,
    status TEXT NOT NULL,
    snapshot TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS open_starts (
    key TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    started_at REAL NOT NULL,
    trace_id TEXT,
    span_id TEXT,
    event_ts TEXT
);
CREATE TABLE IF NOT EXISTS finished (
    key TEXT PRIMARY KEY,
    event_ts TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS finished_at ON finished (at);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY,
    notifier TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    alert TEXT NOT NULL,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    failed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (notifier, failed, id);
"""


@dataclass
class InstanceRow:
    """A pending or firing alert instance. ``subject`` is the operation or route ("" when none)."""

    rule: str
    subject: str
    state: str  # "pending" | "firing"
    active_since: float
    starts_at: float | None = None
    value: float | None = None
    trace_ids: tuple[str, ...] = ()
    last_notified_at: float | None = None
    clear_since: float | None = None
    snapshot: dict[str, Any] | None = None


@dataclass(frozen=True)
class OpenStart:
    key: str
    operation: str
    started_at: float
    trace_id: str | None
    span_id: str | None
    event_ts: str | None


@dataclass(frozen=True)
class NotificationRow:
    id: int
    notifier: str
    fingerprint: str
    status: str
    alert: dict[str, Any]
    created_at: float
    next_attempt_at: float
    attempts: int
    last_error: str | None


class AlertStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the writer lock; rolled back on any error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # -- instances --------------------------------------------------------------------------------

    def load_instances(self) -> list[InstanceRow]:
        rows = self._read(
            "SELECT rule, subject, state, active_since, starts_at, value, trace_ids, last_notified_at,"
            " clear_since, snapshot FROM alerts"
        )
        return [
            InstanceRow(
                rule=row[0],
                subject=row[1],
                state=row[2],
                active_since=row[3],
                starts_at=row[4],
                value=row[5],
                trace_ids=tuple(json.loads(row[6])),
                last_notified_at=row[7],
                clear_since=row[8],
                snapshot=json.loads(row[9]) if row[9] else None,
            )
            for row in rows
        ]

    def firing_snapshots(self) -> list[dict[str, Any]]:
        """The firing alerts as last evaluated (a CLI beside a running collector reads these)."""
        rows = self._read(
            "SELECT snapshot FROM alerts WHERE state='firing' AND snapshot IS NOT NULL ORDER BY starts_at"
        )
        return [json.loads(row[0]) for row in rows]

    @staticmethod
    def save_instance(db: sqlite3.Connection, row: InstanceRow) -> None:
        db.execute(
            "INSERT OR REPLACE INTO alerts (rule, subject, state, active_since, starts_at, value, trace_ids,"
            " last_notified_at, clear_since, snapshot) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                row.rule,
                row.subject,
                row.state,
                row.active_since,
                row.starts_at,
                row.value,
                json.dumps(list(row.trace_ids)),
                row.last_notified_at,
                row.clear_since,
                json.dumps(row.snapshot) if row.snapshot is not None else None,
            ),
        )

    @staticmethod
    def delete_instance(db: sqlite3.Connection, rule: str, subject: str) -> None:
        db.execute("DELETE FROM alerts WHERE rule=? AND subject=?", (rule, subject))

    # -- history ----------------------------------------------------------------------------------

    @staticmethod
    def add_history(db: sqlite3.Connection, at: float, snapshot: dict[str, Any]) -> None:
        db.execute(
            "INSERT INTO history (at, rule, subject, status, snapshot) VALUES (?,?,?,?,?)",
            (at, snapshot["alertname"], snapshot.get("subject") or "", snapshot["status"], json.dumps(snapshot)),
        )
        db.execute("DELETE FROM history WHERE id <= (SELECT max(id) FROM history) - ?", (HISTORY_LIMIT,))

    def history(self, limit: int = 100, *, after_id: int = 0) -> list[dict[str, Any]]:
        """Newest first; each entry is the snapshot plus ``at`` and its row ``id``. ``after_id``: only
        entries newer than that one (``alerts --follow`` polls with the last id it printed)."""
        rows = self._read(
            "SELECT id, at, snapshot FROM history WHERE id > ? ORDER BY id DESC LIMIT ?",
            (int(after_id), max(0, int(limit))),
        )
        return [{**json.loads(snapshot), "id": row_id, "at": at} for row_id, at, snapshot in rows]

    # -- open starts ------------------------------------------------------------------------------

    def load_open_starts(self) -> list[OpenStart]:
        rows = self._read(
            "SELECT key, operation, started_at, trace_id, span_id, event_ts FROM open_starts ORDER BY started_at"
        )
        return [OpenStart(*row) for row in rows]

    @staticmethod
    def apply_open_starts(db: sqlite3.Connection, added: Iterable[OpenStart], removed: Iterable[str]) -> None:
        db.executemany("DELETE FROM open_starts WHERE key=?", [(key,) for key in removed])
        db.executemany(
            "INSERT OR REPLACE INTO open_starts (key, operation, started_at, trace_id, span_id, event_ts)"
            " VALUES (?,?,?,?,?,?)",
            [(s.key, s.operation, s.started_at, s.trace_id, s.span_id, s.event_ts) for s in added],
        )

    def load_finished(self, since: float, limit: int | None = None) -> list[tuple[str, str, float]]:
        """(key, event timestamp, at) of the outcomes recorded at or after ``since``, oldest first; with
        ``limit``, only the newest ``limit`` of them."""
        rows = self._read(
            "SELECT key, event_ts, at FROM finished WHERE at >= ? ORDER BY at DESC, rowid DESC LIMIT ?",
            (since, -1 if limit is None else max(0, int(limit))),
        )
        return [(key, event_ts, at) for key, event_ts, at in reversed(rows)]

    @staticmethod
    def apply_finished(
        db: sqlite3.Connection,
        added: Mapping[str, tuple[str, float]],
        prune_before: float,
        max_rows: int | None = None,
    ) -> None:
        """Write the outcomes added since the last call, then delete those recorded before
        ``prune_before`` and, with ``max_rows``, all but the newest written ``max_rows`` (a rewritten key
        counts as newest: INSERT OR REPLACE gives it a new rowid)."""
        db.executemany(
            "INSERT OR REPLACE INTO finished (key, event_ts, at) VALUES (?,?,?)",
            [(key, event_ts, at) for key, (event_ts, at) in added.items()],
        )
        db.execute("DELETE FROM finished WHERE at < ?", (prune_before,))
        if max_rows is not None:
            db.execute(
                "DELETE FROM finished WHERE rowid <= (SELECT max(rowid) FROM finished) - ?", (max(0, int(max_rows)),)
            )

    def finished_rows(self) -> int:
        return int(self._read("SELECT count(*) FROM finished")[0][0])

    # -- notifications ----------------------------------------------------------------------------

    @staticmethod
    def enqueue_notification(db: sqlite3.Connection, notifier: str, alert: dict[str, Any], now: float) -> None:
        db.execute(
            "INSERT INTO notifications (notifier, fingerprint, status, alert, created_at, next_attempt_at)"
            " VALUES (?,?,?,?,?,?)",
            (notifier, alert["fingerprint"], alert["status"], json.dumps(alert), now, now),
        )

    def head_notification(self, notifier: str) -> NotificationRow | None:
        """The oldest undelivered notification of a notifier: they go out in order, one at a time."""
        rows = self._read(
            "SELECT id, notifier, fingerprint, status, alert, created_at, next_attempt_at, attempts, last_error"
            " FROM notifications WHERE notifier=? AND failed=0 ORDER BY id LIMIT 1",
            (notifier,),
        )
        if not rows:
            return None
        row = rows[0]
        return NotificationRow(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6], row[7], row[8])

    def delivered(self, notification_id: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM notifications WHERE id=?", (notification_id,))

    def retry_later(self, notification_id: int, next_attempt_at: float, error: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE notifications SET attempts=attempts+1, next_attempt_at=?, last_error=? WHERE id=?",
                (next_attempt_at, error[:500], notification_id),
            )

    def give_up(self, notification_id: int, error: str) -> None:
        """A receiver that refuses the notification for good (4xx): kept, marked failed, not retried."""
        with self.transaction() as db:
            db.execute(
                "UPDATE notifications SET attempts=attempts+1, failed=1, last_error=? WHERE id=?",
                (error[:500], notification_id),
            )

    def pending_notifications(self) -> list[NotificationRow]:
        rows = self._read(
            "SELECT id, notifier, fingerprint, status, alert, created_at, next_attempt_at, attempts, last_error"
            " FROM notifications WHERE failed=0 ORDER BY id"
        )
        return [
            NotificationRow(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6], row[7], row[8])
            for row in rows
        ]

    def failed_notifications(self) -> int:
        return int(self._read("SELECT count(*) FROM notifications WHERE failed=1")[0][0])
