"""The durable outbox: PostHog events waiting for delivery, in SQLite (WAL).

Rows move pending -> in-flight (claimed) -> deleted (ack) / pending again with a later
``next_attempt_at`` (nack) / the ``dead_letters`` table with a reason. Opening the outbox
returns in-flight rows to pending, so a crash at any point loses nothing: a claimed batch
that was delivered but not acked is delivered again, and PostHog de-duplicates it by uuid.

Durability: ``journal_mode=WAL`` with ``synchronous=NORMAL``. A commit appends to the WAL
with a write(2) before ``put`` returns, so a killed process (kill -9, OOM) loses nothing;
only an OS crash or power loss can lose the last transactions, because the WAL is fsynced
at checkpoints rather than at every commit. ``synchronous="FULL"`` closes that window at
the cost of one fsync per ``put``.

The row count and payload bytes live in ``outbox_stats``, kept by triggers in the same
transactions, so they are right for every process that opens the file (the CLI replays dead
letters while the collector runs) and cost no scan.

Two connections, each guarded by its own lock: writes (put, the claim's mark, ack, nack,
dead letters) go through the writer, one short transaction a call, serialised by a Python
lock rather than SQLite's sleeping busy handler; reads (the claim's select, the gauges) go
through the reader, which in WAL mode reads a committed snapshot beside a writer. So a
receiver's put waits for the delivery worker only while it writes, never while it reads a
batch or refreshes its gauges.

Checkpoints (copying the WAL into the database file, with an fsync) are the delivery
worker's job (``checkpoint``, passive, through the reader), not the writer's: SQLite's
automatic checkpoint would run inside whichever commit crosses the threshold, often a
receiver's put, and show up as ack latency.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from collector.defaults import DEFAULT_OUTBOX_MAX_BYTES
from collector.events import StoredEvent, encode_event

__all__ = ["Outbox", "OutboxError", "OutboxFullError"]

_PENDING = 0
_IN_FLIGHT = 1
# SQLite >= 3.32 allows 32766 host parameters per statement; stay far below.
_MAX_PARAMS = 500
_ACK_CHUNK = 100

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    enqueued_at REAL NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
-- not on state: claiming then changes no index entry; the few in-flight rows are skipped
CREATE INDEX IF NOT EXISTS outbox_next_attempt ON outbox (next_attempt_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    uuid TEXT PRIMARY KEY,
    payload TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    reason TEXT NOT NULL,
    failed_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS dead_letters_failed_at ON dead_letters (failed_at);
CREATE TABLE IF NOT EXISTS outbox_stats (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO outbox_stats SELECT 0, count(*), coalesce(sum(size_bytes), 0) FROM outbox;
CREATE TRIGGER IF NOT EXISTS outbox_stats_insert AFTER INSERT ON outbox BEGIN
    UPDATE outbox_stats SET rows = rows + 1, bytes = bytes + NEW.size_bytes WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS outbox_stats_delete AFTER DELETE ON outbox BEGIN
    UPDATE outbox_stats SET rows = rows - 1, bytes = bytes - OLD.size_bytes WHERE id = 0;
END;
"""


class OutboxError(Exception):
    """Storage trouble (disk full, database locked or corrupt): answer 503 with Retry-After."""


class OutboxFullError(Exception):
    """The outbox holds max_bytes already: backpressure (429 with Retry-After), never a drop."""


def _chunks(items: Sequence[Any], size: int = _MAX_PARAMS) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _placeholders(count: int) -> str:
    return ",".join("?" * count)


class Outbox:
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_OUTBOX_MAX_BYTES,
        clock: Callable[[], float] = time.time,
        synchronous: str = "NORMAL",
        recover_in_flight: bool = True,
    ) -> None:
        """Open (or create) the outbox at path.

        recover_in_flight: return rows claimed by a previous (crashed) process to pending.
        The collector does; an inspector opening the file beside a running collector (the
        CLI) must not, or it would hand the running worker's claimed rows out again.
        """
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()  # the writer connection
        self._read_lock = threading.Lock()  # the reader connection
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"cannot open the outbox at {self.path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
            if recover_in_flight:
                with _transaction(self._db):
                    # crash resume: whatever a previous process claimed goes back to pending
                    self._db.execute("UPDATE outbox SET state=? WHERE state=?", (_PENDING, _IN_FLIGHT))
            self._reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        except sqlite3.Error as exc:
            self._db.close()
            raise OutboxError(f"cannot open the outbox at {self.path}: {exc}") from exc

    # -- the two connections -----------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self, failure: str, *, transaction: bool = True) -> Iterator[sqlite3.Connection]:
        """The writer connection under its lock, in one ``BEGIN IMMEDIATE`` transaction (committed when
        the block ends, rolled back when it raises); a ``sqlite3.Error`` becomes ``OutboxError(failure)``."""
        with self._lock:
            try:
                if transaction:
                    with _transaction(self._db):
                        yield self._db
                else:
                    yield self._db
            except sqlite3.Error as exc:
                raise OutboxError(f"{failure}: {exc}") from exc

    @contextlib.contextmanager
    def _reading(self, failure: str = "outbox read failed") -> Iterator[sqlite3.Connection]:
        """The reader connection under its lock (a committed snapshot beside the writer); a
        ``sqlite3.Error`` becomes ``OutboxError(failure)``."""
        with self._read_lock:
            try:
                yield self._reader
            except sqlite3.Error as exc:
                raise OutboxError(f"{failure}: {exc}") from exc

    def _read_one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """One row through the reader connection (a row, never None, for the aggregate queries)."""
        with self._reading() as reader:
            return reader.execute(sql, params).fetchone()

    # -- ingest ------------------------------------------------------------------------

    def put(self, events: Sequence[Mapping[str, Any]]) -> int:
        """Store events durably (committed when this returns); idempotent by uuid.

        Returns how many rows were newly inserted. Raises OutboxFullError when the events
        would take the outbox over max_bytes (nothing is stored then), OutboxError on
        storage trouble.
        """
        if not events:
            return 0
        now = self._clock()
        rows = []
        incoming_bytes = 0
        for event in events:
            payload = encode_event(event)
            size = len(payload.encode())
            incoming_bytes += size
            try:
                rows.append((event["uuid"], payload, size, now, now))
            except KeyError:
                raise ValueError(f"an outbox event needs a uuid: {payload[:200]}") from None
        with self._writing("outbox write failed") as db:
            _, stored_bytes = db.execute("SELECT rows, bytes FROM outbox_stats WHERE id=0").fetchone()
            if stored_bytes + incoming_bytes > self.max_bytes:
                raise OutboxFullError(
                    f"outbox full: {stored_bytes} + {incoming_bytes} bytes > max_bytes {self.max_bytes}"
                )
            return db.executemany(
                "INSERT OR IGNORE INTO outbox"
                " (uuid, payload, size_bytes, enqueued_at, next_attempt_at)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            ).rowcount

    # -- gauges ------------------------------------------------------------------------

    def depth(self) -> int:
        """Rows pending or in flight (dead letters excluded)."""
        return int(self._read_one("SELECT rows FROM outbox_stats WHERE id=0")[0])

    def size_bytes(self) -> int:
        """Bytes of stored payloads pending or in flight: what max_bytes bounds."""
        return int(self._read_one("SELECT bytes FROM outbox_stats WHERE id=0")[0])

    def oldest_age_s(self) -> float | None:
        # rows are numbered in enqueue order: the first one is the oldest (an index lookup)
        row = self._read_one("SELECT enqueued_at FROM outbox ORDER BY seq LIMIT 1")
        return None if row is None else max(0.0, self._clock() - row[0])

    def next_due_at(self) -> float | None:
        """When the earliest pending row becomes due, or None when nothing is pending."""
        due: float | None = self._read_one("SELECT min(next_attempt_at) FROM outbox WHERE state=?", (_PENDING,))[0]
        return due

    # -- delivery ----------------------------------------------------------------------

    def claim(self, *, max_events: int, max_bytes: int) -> list[StoredEvent]:
        """Mark due pending rows in flight, oldest first, and return their events.

        The batch holds at most max_events rows and max_bytes of payload, but always at
        least one row when one is due (an oversized event must still come out, to be
        dead-lettered by the worker). The rows are read through the reader connection; only
        marking them in flight takes the writer. Claims are meant for one delivery thread.
        """
        now = self._clock()
        with self._reading("outbox claim failed") as reader:
            candidates = reader.execute(
                "SELECT seq, uuid, CAST(payload AS BLOB), size_bytes, json_extract(payload, '$.timestamp')"
                " FROM outbox WHERE state=? AND next_attempt_at<=?"
                " ORDER BY next_attempt_at, seq LIMIT ?",
                (_PENDING, now, max_events),
            ).fetchall()
        batch: list[StoredEvent] = []
        batch_seqs: list[int] = []
        batch_bytes = 0
        for seq, uuid, payload, size, timestamp in candidates:
            if batch and batch_bytes + size > max_bytes:
                break
            batch_bytes += size
            batch_seqs.append(seq)
            batch.append(StoredEvent(uuid, payload, size, timestamp))
        if not batch:
            return batch
        with self._writing("outbox claim failed") as db:
            for chunk in _chunks(batch_seqs):
                db.execute(
                    f"UPDATE outbox SET state=? WHERE seq IN ({_placeholders(len(chunk))})",
                    (_IN_FLIGHT, *chunk),
                )
        return batch

    def ack(self, uuids: Iterable[str]) -> None:
        """Delivered: delete the rows.

        One short transaction per _ACK_CHUNK rows, releasing the lock in between, so that a
        put from the receiver never waits behind a whole batch (deleting is idempotent).
        """
        for chunk in _chunks(list(uuids), _ACK_CHUNK):
            with self._writing("outbox ack failed") as db:
                db.execute(f"DELETE FROM outbox WHERE uuid IN ({_placeholders(len(chunk))})", chunk)

    def nack(self, uuids: Iterable[str], *, retry_at: float, error: str) -> None:
        """Not delivered: back to pending, due again at retry_at (wall-clock seconds)."""
        with self._writing("outbox nack failed") as db:
            for chunk in _chunks(list(uuids)):
                db.execute(
                    "UPDATE outbox SET state=?, next_attempt_at=?, attempts=attempts+1,"
                    f" last_error=? WHERE uuid IN ({_placeholders(len(chunk))})",
                    (_PENDING, retry_at, error, *chunk),
                )

    # -- dead letters ------------------------------------------------------------------

    def dead_letter(self, events_or_uuids: Iterable[Mapping[str, Any] | str], *, reason: str) -> int:
        """Move rows to dead_letters with the reason; returns how many were dead-lettered.

        Accepts uuids of queued rows, or event dicts: an event not in the outbox (say, one
        refused before queueing) is stored as a dead letter from the dict itself.
        """
        items = list(events_or_uuids)
        now = self._clock()
        count = 0
        with self._writing("outbox dead-letter failed") as db:
            for item in items:
                uuid = item if isinstance(item, str) else item["uuid"]
                moved = db.execute(
                    "INSERT OR REPLACE INTO dead_letters"
                    " (uuid, payload, size_bytes, reason, failed_at, attempts)"
                    " SELECT uuid, payload, size_bytes, ?, ?, attempts FROM outbox"
                    " WHERE uuid=?",
                    (reason, now, uuid),
                ).rowcount
                if moved:
                    db.execute("DELETE FROM outbox WHERE uuid=?", (uuid,))
                elif isinstance(item, Mapping):  # a dict, or a claimed StoredEvent
                    payload = encode_event(item)
                    db.execute(
                        "INSERT OR REPLACE INTO dead_letters"
                        " (uuid, payload, size_bytes, reason, failed_at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (uuid, payload, len(payload.encode()), reason, now),
                    )
                else:
                    continue
                count += 1
        return count

    def dead_letter_expired(self, uuids: Iterable[str], *, enqueued_before: float, reason: str) -> list[str]:
        """Dead-letter those of uuids enqueued before the given time; returns their uuids."""
        expired: list[str] = []
        with self._writing("outbox read failed", transaction=False) as db:
            for chunk in _chunks(list(uuids)):
                expired += [
                    uuid
                    for (uuid,) in db.execute(
                        f"SELECT uuid FROM outbox WHERE uuid IN ({_placeholders(len(chunk))}) AND enqueued_at<?",
                        (*chunk, enqueued_before),
                    )
                ]
        if expired:
            self.dead_letter(expired, reason=reason)
        return expired

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest dead letters: uuid, event (its name), reason, failed_at, attempts, payload."""
        with self._reading() as reader:
            rows = reader.execute(
                "SELECT uuid, payload, reason, failed_at, attempts FROM dead_letters"
                " ORDER BY failed_at DESC, uuid LIMIT ?",
                (limit,),
            ).fetchall()
        letters = []
        for uuid, payload, reason, failed_at, attempts in rows:
            event = json.loads(payload)
            letters.append(
                {
                    "uuid": uuid,
                    "event": event.get("event"),
                    "reason": reason,
                    "failed_at": failed_at,
                    "attempts": attempts,
                    "payload": event,
                }
            )
        return letters

    def dead_letter_count(self) -> int:
        return int(self._read_one("SELECT count(*) FROM dead_letters")[0])

    def replay_dead_letters(self, uuids: Sequence[str] | None = None) -> int:
        """Move dead letters (all, or those uuids) back to the outbox, due now; returns the count."""
        now = self._clock()
        replayed = 0
        with self._writing("dead-letter replay failed") as db:
            if uuids is None:
                selected = [u for (u,) in db.execute("SELECT uuid FROM dead_letters")]
            else:
                selected = list(uuids)
            for chunk in _chunks(selected):
                marks = _placeholders(len(chunk))
                replayed += db.execute(
                    "INSERT OR IGNORE INTO outbox"
                    " (uuid, payload, size_bytes, enqueued_at, next_attempt_at)"
                    f" SELECT uuid, payload, size_bytes, ?, ? FROM dead_letters WHERE uuid IN ({marks})",
                    (now, now, *chunk),
                ).rowcount
                db.execute(f"DELETE FROM dead_letters WHERE uuid IN ({marks})", chunk)
        return replayed

    def checkpoint(self) -> None:
        """Copy committed WAL frames into the database file without blocking writers (PASSIVE).

        Once a checkpoint has caught up, the next write starts the WAL over, so calling this
        between deliveries keeps the WAL file small.
        """
        with self._reading("outbox checkpoint failed") as reader:
            reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        with self._lock, self._read_lock:
            try:
                self._reader.close()
                self._db.close()
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox close failed: {exc}") from exc


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
