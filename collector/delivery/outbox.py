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

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

__all__ = ["Outbox", "OutboxError", "OutboxFullError", "StoredEvent", "encode_event"]

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


def encode_event(event: dict) -> str:
    """The compact JSON stored for an event; its UTF-8 length is the event's size.

    Always valid JSON: a non-finite float (which json.dumps would write as a bare NaN or
    Infinity) becomes null, as posthog-python's batch_post does. Mapping already turns them
    into strings, so the fallback costs nothing on the normal path.
    """
    if isinstance(event, StoredEvent):
        return event.payload.decode()
    try:
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(event), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


class StoredEvent(Mapping):
    """An event claimed from the outbox, read-only.

    ``payload`` is its stored JSON as UTF-8 bytes, for an exporter to send as it is; ``uuid``
    and ``size_bytes`` come from the row. The decoded event (any other key) is parsed on first
    use only, so delivery never decodes the events it sends. ``timestamp`` is read by SQLite
    (json_extract) for the delivery-lag gauge, without decoding the event in Python.
    """

    __slots__ = ("uuid", "payload", "size_bytes", "_timestamp", "_event")

    def __init__(self, uuid: str, payload: bytes, size_bytes: int, timestamp=None) -> None:
        self.uuid = uuid
        self.payload = payload
        self.size_bytes = size_bytes
        self._timestamp = timestamp
        self._event: dict | None = None

    @classmethod
    def of(cls, event: dict) -> StoredEvent:
        """Wrap an event dict as the outbox would store it (tests, replay)."""
        payload = encode_event(event).encode()
        stored = cls(event["uuid"], payload, len(payload), event.get("timestamp"))
        stored._event = json.loads(payload)
        return stored

    @property
    def event(self) -> dict:
        if self._event is None:
            self._event = json.loads(self.payload)
        return self._event

    def __getitem__(self, key: str):
        if key == "uuid":
            return self.uuid
        if key == "timestamp" and isinstance(self._timestamp, str):
            return self._timestamp
        return self.event[key]

    def __iter__(self):
        return iter(self.event)

    def __len__(self) -> int:
        return len(self.event)

    def __repr__(self) -> str:
        return f"StoredEvent({self.payload.decode()!r})"


def _chunks(items: Sequence, size: int = _MAX_PARAMS) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _placeholders(count: int) -> str:
    return ",".join("?" * count)


class Outbox:
    def __init__(
        self,
        path: str | os.PathLike,
        *,
        max_bytes: int = 256 * 2**20,
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
                with self._transaction():
                    # crash resume: whatever a previous process claimed goes back to pending
                    self._db.execute("UPDATE outbox SET state=? WHERE state=?", (_PENDING, _IN_FLIGHT))
            self._reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        except sqlite3.Error as exc:
            self._db.close()
            raise OutboxError(f"cannot open the outbox at {self.path}: {exc}") from exc

    # -- transactions ------------------------------------------------------------------

    def _transaction(self):
        return _Transaction(self._db)

    def _stats(self) -> tuple[int, int]:
        return self._db.execute("SELECT rows, bytes FROM outbox_stats WHERE id=0").fetchone()

    # -- ingest ------------------------------------------------------------------------

    def put(self, events: Sequence[dict]) -> int:
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
        with self._lock:
            try:
                with self._transaction():
                    _, stored_bytes = self._stats()
                    if stored_bytes + incoming_bytes > self.max_bytes:
                        raise OutboxFullError(
                            f"outbox full: {stored_bytes} + {incoming_bytes} bytes > max_bytes {self.max_bytes}"
                        )
                    inserted = self._db.executemany(
                        "INSERT OR IGNORE INTO outbox"
                        " (uuid, payload, size_bytes, enqueued_at, next_attempt_at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        rows,
                    ).rowcount
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox write failed: {exc}") from exc
        return inserted

    # -- gauges ------------------------------------------------------------------------

    def depth(self) -> int:
        """Rows pending or in flight (dead letters excluded)."""
        return self._read_one("SELECT rows FROM outbox_stats WHERE id=0")[0]

    def size_bytes(self) -> int:
        """Bytes of stored payloads pending or in flight: what max_bytes bounds."""
        return self._read_one("SELECT bytes FROM outbox_stats WHERE id=0")[0]

    def oldest_age_s(self) -> float | None:
        # rows are numbered in enqueue order: the first one is the oldest (an index lookup)
        row = self._read_one("SELECT enqueued_at FROM outbox ORDER BY seq LIMIT 1")
        return None if row is None else max(0.0, self._clock() - row[0])

    def next_due_at(self) -> float | None:
        """When the earliest pending row becomes due, or None when nothing is pending."""
        return self._read_one("SELECT min(next_attempt_at) FROM outbox WHERE state=?", (_PENDING,))[0]

    # -- delivery ----------------------------------------------------------------------

    def claim(self, *, max_events: int, max_bytes: int) -> list[StoredEvent]:
        """Mark due pending rows in flight, oldest first, and return their events.

        The batch holds at most max_events rows and max_bytes of payload, but always at
        least one row when one is due (an oversized event must still come out, to be
        dead-lettered by the worker). The rows are read through the reader connection; only
        marking them in flight takes the writer. Claims are meant for one delivery thread.
        """
        now = self._clock()
        with self._read_lock:
            try:
                candidates = self._reader.execute(
                    "SELECT seq, uuid, CAST(payload AS BLOB), size_bytes, json_extract(payload, '$.timestamp')"
                    " FROM outbox WHERE state=? AND next_attempt_at<=?"
                    " ORDER BY next_attempt_at, seq LIMIT ?",
                    (_PENDING, now, max_events),
                ).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox claim failed: {exc}") from exc
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
        with self._lock:
            try:
                with self._transaction():
                    for chunk in _chunks(batch_seqs):
                        self._db.execute(
                            f"UPDATE outbox SET state=? WHERE seq IN ({_placeholders(len(chunk))})",
                            (_IN_FLIGHT, *chunk),
                        )
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox claim failed: {exc}") from exc
        return batch

    def ack(self, uuids: Iterable[str]) -> None:
        """Delivered: delete the rows.

        One short transaction per _ACK_CHUNK rows, releasing the lock in between, so that a
        put from the receiver never waits behind a whole batch (deleting is idempotent).
        """
        uuids = list(uuids)
        for chunk in _chunks(uuids, _ACK_CHUNK):
            with self._lock:
                try:
                    with self._transaction():
                        self._db.execute(f"DELETE FROM outbox WHERE uuid IN ({_placeholders(len(chunk))})", chunk)
                except sqlite3.Error as exc:
                    raise OutboxError(f"outbox ack failed: {exc}") from exc

    def nack(self, uuids: Iterable[str], *, retry_at: float, error: str) -> None:
        """Not delivered: back to pending, due again at retry_at (wall-clock seconds)."""
        uuids = list(uuids)
        with self._lock:
            try:
                with self._transaction():
                    for chunk in _chunks(uuids):
                        self._db.execute(
                            "UPDATE outbox SET state=?, next_attempt_at=?, attempts=attempts+1,"
                            f" last_error=? WHERE uuid IN ({_placeholders(len(chunk))})",
                            (_PENDING, retry_at, error, *chunk),
                        )
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox nack failed: {exc}") from exc

    # -- dead letters ------------------------------------------------------------------

    def dead_letter(self, events_or_uuids: Iterable[dict | str], *, reason: str) -> int:
        """Move rows to dead_letters with the reason; returns how many were dead-lettered.

        Accepts uuids of queued rows, or event dicts: an event not in the outbox (say, one
        refused before queueing) is stored as a dead letter from the dict itself.
        """
        items = list(events_or_uuids)
        now = self._clock()
        count = 0
        with self._lock:
            try:
                with self._transaction():
                    for item in items:
                        uuid = item if isinstance(item, str) else item["uuid"]
                        moved = self._db.execute(
                            "INSERT OR REPLACE INTO dead_letters"
                            " (uuid, payload, size_bytes, reason, failed_at, attempts)"
                            " SELECT uuid, payload, size_bytes, ?, ?, attempts FROM outbox"
                            " WHERE uuid=?",
                            (reason, now, uuid),
                        ).rowcount
                        if moved:
                            self._db.execute("DELETE FROM outbox WHERE uuid=?", (uuid,))
                        elif isinstance(item, Mapping):  # a dict, or a claimed StoredEvent
                            payload = encode_event(item)
                            self._db.execute(
                                "INSERT OR REPLACE INTO dead_letters"
                                " (uuid, payload, size_bytes, reason, failed_at)"
                                " VALUES (?, ?, ?, ?, ?)",
                                (uuid, payload, len(payload.encode()), reason, now),
                            )
                        else:
                            continue
                        count += 1
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox dead-letter failed: {exc}") from exc
        return count

    def dead_letter_expired(self, uuids: Iterable[str], *, enqueued_before: float, reason: str) -> list[str]:
        """Dead-letter those of uuids enqueued before the given time; returns their uuids."""
        uuids = list(uuids)
        with self._lock:
            expired = []
            try:
                for chunk in _chunks(uuids):
                    expired += [
                        uuid
                        for (uuid,) in self._db.execute(
                            f"SELECT uuid FROM outbox WHERE uuid IN ({_placeholders(len(chunk))}) AND enqueued_at<?",
                            (*chunk, enqueued_before),
                        )
                    ]
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox read failed: {exc}") from exc
        if expired:
            self.dead_letter(expired, reason=reason)
        return expired

    def dead_letters(self, limit: int = 100) -> list[dict]:
        """The newest dead letters: uuid, event (its name), reason, failed_at, attempts, payload."""
        with self._read_lock:
            rows = self._query(
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
        return self._read_one("SELECT count(*) FROM dead_letters")[0]

    def replay_dead_letters(self, uuids: Sequence[str] | None = None) -> int:
        """Move dead letters (all, or those uuids) back to the outbox, due now; returns the count."""
        now = self._clock()
        with self._lock:
            try:
                with self._transaction():
                    if uuids is None:
                        selected = [u for (u,) in self._db.execute("SELECT uuid FROM dead_letters")]
                    else:
                        selected = list(uuids)
                    replayed = 0
                    for chunk in _chunks(selected):
                        marks = _placeholders(len(chunk))
                        replayed += self._db.execute(
                            "INSERT OR IGNORE INTO outbox"
                            " (uuid, payload, size_bytes, enqueued_at, next_attempt_at)"
                            f" SELECT uuid, payload, size_bytes, ?, ? FROM dead_letters WHERE uuid IN ({marks})",
                            (now, now, *chunk),
                        ).rowcount
                        self._db.execute(f"DELETE FROM dead_letters WHERE uuid IN ({marks})", chunk)
            except sqlite3.Error as exc:
                raise OutboxError(f"dead-letter replay failed: {exc}") from exc
        return replayed

    def checkpoint(self) -> None:
        """Copy committed WAL frames into the database file without blocking writers (PASSIVE).

        Once a checkpoint has caught up, the next write starts the WAL over, so calling this
        between deliveries keeps the WAL file small.
        """
        with self._read_lock:
            try:
                self._reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox checkpoint failed: {exc}") from exc

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        with self._lock, self._read_lock:
            try:
                self._reader.close()
                self._db.close()
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox close failed: {exc}") from exc

    # -- internals ---------------------------------------------------------------------

    def _read_one(self, sql: str, params: Sequence = ()) -> tuple | None:
        """One row through the reader connection (a committed snapshot; no writer lock)."""
        with self._read_lock:
            return self._query(sql, params).fetchone()

    def _query(self, sql: str, params: Sequence = ()) -> sqlite3.Cursor:
        """Through the reader connection; the caller holds _read_lock."""
        try:
            return self._reader.execute(sql, params)
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox read failed: {exc}") from exc


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:
            self._db.execute("ROLLBACK")
