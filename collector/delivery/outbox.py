"""The durable outbox: PostHog events waiting for delivery, in SQLite (WAL).

One row holds the events of one put (one ingested request, up to ``_ROW_EVENTS`` events a row): their
uuids, compact JSON payloads and timestamps, one a line each, in the same order. A put is one INSERT
and a delivered row one DELETE whatever its events: per-event rows cost an index insert and delete for
each event, which was most of the collector's SQLite work.

A claim hands out the events of whole rows, oldest first, and marks them in flight in this process's
memory only (no write): a row stays pending on disk until every one of its events is resolved. Then it
is deleted (all acked or dead-lettered), rescheduled (all nacked: a later ``next_attempt_at``) or
rewritten with its nacked events only. So a crash at any point loses nothing: a claimed row is delivered
again, whole, and PostHog de-duplicates by uuid. A put stores a uuid once; a uuid is in flight once: a
row holding one that is in flight (a request sent again while its first copy waits) waits for the next
claim. Opening the outbox moves the rows of an older file's per-event table into this layout.

Durability: ``journal_mode=WAL`` with ``synchronous=NORMAL``. A commit appends to the WAL
with a write(2) before ``put`` returns, so a killed process (kill -9, OOM) loses nothing;
only an OS crash or power loss can lose the last transactions, because the WAL is fsynced
at checkpoints rather than at every commit. ``synchronous="FULL"`` closes that window at
the cost of one fsync per ``put``.

The event count and payload bytes live in ``outbox_stats``, updated once per statement by the
statement's own transaction (``_add_stats``), and those of the dead letters in
``dead_letter_stats``, kept by triggers: so they are right for every process that opens the file
(the CLI replays dead letters while the collector runs) and cost no scan.

Dead letters (one per event) are bounded (``dead_letter_max_rows``, ``dead_letter_max_bytes``): beyond
either bound the oldest are deleted in the transaction that adds new ones, and counted
(``dead_letters_dropped``).

A corrupt row (columns of the wrong type, or lines that do not match its event count, as a bad disk or a
hand edit leaves them) never stops delivery: the claim that meets one moves it whole to the dead letters
with the reason ``corrupt outbox row: ...`` (counted in ``corrupt_rows``) and goes on; the delivery
worker dead-letters an event that cannot be decoded when the exporter fails on it.

Two connections, each guarded by its own lock: writes (put, ack, nack, dead letters) go
through the writer, one short transaction a call, serialised by a Python lock rather than
SQLite's sleeping busy handler; reads (the claim, the gauges) go through the reader, which
in WAL mode reads a committed snapshot beside a writer. So a receiver's put waits for the
delivery worker only while it acks or reschedules, never while it claims a batch or refreshes
its gauges.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.defaults import (
    DEFAULT_DEAD_LETTER_MAX_BYTES,
    DEFAULT_DEAD_LETTER_MAX_ROWS,
    DEFAULT_OUTBOX_MAX_BYTES,
)
from collector.events import StoredEvent, encode_event, encode_event_bytes

__all__ = ["Outbox", "OutboxError", "OutboxFullError"]

# SQLite >= 3.32 allows 32766 host parameters per statement; stay far below.
_MAX_PARAMS = 500
_ROW_EVENTS = 1000
"""Events a row holds at most: a claim hands out whole rows, so this bounds one row's share of a batch."""

_SCHEMA = """
-- the long columns last: reading the others (a claim's WHERE, the gauges) never walks a payload's pages
CREATE TABLE IF NOT EXISTS outbox_rows (
    seq INTEGER PRIMARY KEY,
    events INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,  -- the payload's UTF-8 bytes without the line breaks
    enqueued_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    uuids TEXT NOT NULL,       -- one a line
    timestamps TEXT NOT NULL,  -- each event's timestamp, one a line ('' when it is not a line of text)
    payload TEXT NOT NULL      -- each event's compact JSON, one a line, in the order of uuids
);
CREATE TABLE IF NOT EXISTS dead_letters (
    uuid TEXT PRIMARY KEY,
    payload TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    reason TEXT NOT NULL,
    failed_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS dead_letters_failed_at ON dead_letters (failed_at);
-- rows: events in the outbox
CREATE TABLE IF NOT EXISTS outbox_stats (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO outbox_stats VALUES (0, 0, 0);
-- added later than the outbox: created and filled from the table when a file lacks it
CREATE TABLE IF NOT EXISTS dead_letter_stats (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO dead_letter_stats SELECT 0, count(*), coalesce(sum(size_bytes), 0) FROM dead_letters;
CREATE TRIGGER IF NOT EXISTS dead_letter_stats_insert AFTER INSERT ON dead_letters BEGIN
    UPDATE dead_letter_stats SET rows = rows + 1, bytes = bytes + NEW.size_bytes WHERE id = 0;
END;
CREATE TRIGGER IF NOT EXISTS dead_letter_stats_delete AFTER DELETE ON dead_letters BEGIN
    UPDATE dead_letter_stats SET rows = rows - 1, bytes = bytes - OLD.size_bytes WHERE id = 0;
END;
"""

# an older file's one row per event (table outbox), each moved into a row of its own
_MIGRATE_SQL = (
    "INSERT INTO outbox_rows"
    " (uuids, payload, timestamps, events, size_bytes, enqueued_at, next_attempt_at, attempts, last_error)"
    " SELECT uuid, payload, '', 1, size_bytes, enqueued_at, next_attempt_at, attempts, last_error"
    " FROM outbox ORDER BY seq"
)
_CLAIM_SQL = (
    "SELECT seq, uuids, CAST(payload AS BLOB), timestamps, events, size_bytes, enqueued_at, attempts"
    " FROM outbox_rows WHERE next_attempt_at<=? ORDER BY seq LIMIT ?"
)


class OutboxError(Exception):
    """Storage trouble (disk full, database locked or corrupt): answer 503 with Retry-After."""


class OutboxFullError(Exception):
    """The outbox holds max_bytes already: backpressure (429 with Retry-After), never a drop."""


@dataclass
class _Claim:
    """A row handed out by a claim, until each of its events is resolved."""

    events: dict[str, StoredEvent]
    """By uuid, in the row's order (a second copy of a uuid is left out)."""
    count: int
    """Events in the row."""
    size_bytes: int
    enqueued_at: float
    attempts: int
    open: set[str] = field(default_factory=set)
    """uuids neither acked, nacked nor dead-lettered yet."""
    kept: list[str] = field(default_factory=list)
    """uuids nacked: they stay in the row."""
    retry_at: float = 0.0
    error: str = ""


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
        dead_letter_max_rows: int = DEFAULT_DEAD_LETTER_MAX_ROWS,
        dead_letter_max_bytes: int = DEFAULT_DEAD_LETTER_MAX_BYTES,
        create: bool = True,
    ) -> None:
        """Open (or create) the outbox at path.

        recover_in_flight: the collector's own outbox, which moves an older file's per-event rows into
        this layout. An inspector opening the file beside a running collector (the CLI) passes False and
        changes no row. (In flight is a claiming process's memory: nothing on disk needs recovering.)
        create=False: a missing file is a ``FileNotFoundError`` (an inspector never creates one).
        """
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        if dead_letter_max_rows < 1 or dead_letter_max_bytes < 1:
            raise ValueError("dead_letter_max_rows and dead_letter_max_bytes must be positive")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.dead_letter_max_rows = dead_letter_max_rows
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.dead_letters_dropped = 0
        """Dead letters deleted by this process to keep within the bounds (a counter)."""
        self.corrupt_rows = 0
        """Corrupt rows this process moved to the dead letters (a counter)."""
        self._clock = clock
        self._lock = threading.Lock()  # the writer connection
        self._read_lock = threading.Lock()  # the reader connection
        self._in_flight: dict[str, int] = {}
        """uuid -> seq of the claimed events not yet acked, nacked or dead-lettered."""
        self._claims: dict[int, _Claim] = {}
        """seq -> the claimed rows not yet resolved."""
        if not create and not self.path.is_file():
            raise FileNotFoundError(f"no outbox at {self.path}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"cannot open the outbox at {self.path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # a dead letter replaced by INSERT OR REPLACE fires the delete trigger only with this on
            self._db.execute("PRAGMA recursive_triggers=ON")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
            if recover_in_flight:
                with _transaction(self._db):
                    if self._db.execute("SELECT 1 FROM sqlite_master WHERE name='outbox'").fetchone():
                        self._db.execute(_MIGRATE_SQL)
                        self._db.execute("DROP TABLE outbox")
                        _recount(self._db)
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
        """Store events durably (committed when this returns), in one row a ``_ROW_EVENTS``, each uuid
        once; returns how many were stored. Raises OutboxFullError when the events would take the outbox
        over max_bytes (nothing is stored then), OutboxError on storage trouble, ValueError for an event
        without a uuid (a line of text)."""
        if not events:
            return 0
        now = self._clock()
        rows = []
        incoming_bytes = 0
        seen: set[str] = set()
        for start in range(0, len(events), _ROW_EVENTS):
            uuids, payloads, timestamps = [], [], []
            for event in events[start : start + _ROW_EVENTS]:
                payload = encode_event_bytes(event)  # compact JSON: never a line break
                uuid = event.get("uuid")
                if type(uuid) is not str or not uuid or "\n" in uuid:
                    raise ValueError(f"an outbox event needs a uuid (a line of text): {payload[:200].decode()}")
                if uuid in seen:
                    continue
                seen.add(uuid)
                timestamp = event.get("timestamp")
                uuids.append(uuid)
                payloads.append(payload)
                timestamps.append(timestamp if type(timestamp) is str and "\n" not in timestamp else "")
            if not payloads:
                continue
            joined = b"\n".join(payloads)
            size = len(joined) - len(payloads) + 1
            incoming_bytes += size
            rows.append(("\n".join(uuids), joined.decode(), "\n".join(timestamps), len(payloads), size, now, now))
        with self._writing("outbox write failed") as db:
            (stored_bytes,) = db.execute("SELECT bytes FROM outbox_stats WHERE id=0").fetchone()
            if stored_bytes + incoming_bytes > self.max_bytes:
                raise OutboxFullError(
                    f"outbox full: {stored_bytes} + {incoming_bytes} bytes > max_bytes {self.max_bytes}"
                )
            db.executemany(
                "INSERT INTO outbox_rows"
                " (uuids, payload, timestamps, events, size_bytes, enqueued_at, next_attempt_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            _add_stats(db, len(seen), incoming_bytes)
        return len(seen)

    # -- gauges ------------------------------------------------------------------------

    def depth(self) -> int:
        """Events pending or in flight (dead letters excluded)."""
        return int(self._read_one("SELECT rows FROM outbox_stats WHERE id=0")[0])

    def size_bytes(self) -> int:
        """Bytes of stored payloads pending or in flight: what max_bytes bounds."""
        return int(self._read_one("SELECT bytes FROM outbox_stats WHERE id=0")[0])

    def oldest_age_s(self) -> float | None:
        # rows are numbered in enqueue order: the first one is the oldest (an index lookup)
        row = self._read_one("SELECT CAST(enqueued_at AS REAL) FROM outbox_rows ORDER BY seq LIMIT 1")
        return None if row is None else max(0.0, self._clock() - row[0])

    def next_due_at(self) -> float | None:
        """When the earliest row becomes due, or None when the outbox is empty."""
        due: float | None = self._read_one("SELECT CAST(min(next_attempt_at) AS REAL) FROM outbox_rows")[0]
        return due

    # -- delivery ----------------------------------------------------------------------

    def claim(self, *, max_events: int, max_bytes: int) -> list[StoredEvent]:
        """The events of due rows not in flight, oldest first, marked in flight.

        Whole rows: at most max_events events and max_bytes of payload, but always at least one row
        when one is due (it may hold more than max_events events, or an oversized event that must
        still come out, to be dead-lettered by the worker). The rows are read through the reader
        connection and marked in flight in memory: a claim writes nothing unless it meets a corrupt
        row. Claims are meant for one delivery thread.
        """
        claims, in_flight = self._claims, self._in_flight
        batch: list[StoredEvent] = []
        batch_bytes = 0
        corrupt: list[tuple[int, str]] = []
        # row by row, never fetchall: rows hold many events, and the batch stops at its bounds
        with self._reading("outbox claim failed") as reader, contextlib.closing(reader.cursor()) as rows:
            rows.execute(_CLAIM_SQL, (self._clock(), max_events + len(claims)))
            for seq, uuids, payload, timestamps, count, size, enqueued_at, attempts in rows:
                if seq in claims:
                    continue
                events = _row_events(uuids, payload, timestamps, count, size)
                if isinstance(events, str):
                    corrupt.append((seq, events))
                    continue
                if any(event.uuid in in_flight for event in events):
                    continue  # a second copy of an event in flight: taken once that one is resolved
                if batch and (len(batch) + count > max_events or batch_bytes + size > max_bytes):
                    break
                claim = claims[seq] = _Claim({}, count, size, float(enqueued_at), int(attempts))
                for event in events:
                    if event.uuid not in claim.events:  # a row edited by hand may repeat one
                        claim.events[event.uuid] = event
                        in_flight[event.uuid] = seq
                        batch.append(event)
                claim.open.update(claim.events)
                batch_bytes += size
        if corrupt:
            self._quarantine(corrupt)
        return batch

    def _quarantine(self, corrupt: Sequence[tuple[int, str]]) -> None:
        """Move corrupt rows, whole, to the dead letters (their uuids as stored, or the row number)."""
        now = self._clock()
        with self._writing("outbox dead-letter failed") as db:
            for seq, problem in corrupt:
                db.execute(
                    "INSERT OR REPLACE INTO dead_letters (uuid, payload, size_bytes, reason, failed_at, attempts)"
                    " SELECT CASE typeof(uuids) WHEN 'text' THEN uuids ELSE 'outbox row ' || seq END,"
                    " coalesce(CAST(payload AS TEXT), ''), coalesce(length(CAST(payload AS BLOB)), 0), ?, ?,"
                    " CASE typeof(attempts) WHEN 'integer' THEN attempts ELSE 0 END"
                    " FROM outbox_rows WHERE seq=?",
                    (f"corrupt outbox row: {problem}", now, seq),
                )
                db.execute("DELETE FROM outbox_rows WHERE seq=?", (seq,))
            _recount(db)  # a corrupt row's counts cannot be trusted (a rare path)
            self._trim_dead_letters(db)
        self.corrupt_rows += len(corrupt)

    def ack(self, uuids: Iterable[str]) -> None:
        """Delivered: claimed events are done; a row whose events are all done is deleted (or rewritten
        with its nacked events). A uuid not in flight is ignored."""
        done = self._resolve(uuids)
        if done:
            with self._writing("outbox ack failed") as db:
                self._finish(db, done)

    def nack(self, uuids: Iterable[str], *, retry_at: float, error: str) -> None:
        """Not delivered: claimed events stay in their row, due again at retry_at (wall-clock seconds)."""
        done = self._resolve(uuids, keep=(retry_at, error))
        if done:
            with self._writing("outbox nack failed") as db:
                self._finish(db, done)

    def _resolve(self, uuids: Iterable[str], keep: tuple[float, str] | None = None) -> list[int]:
        """Take claimed events out of flight (kept in their row when ``keep`` gives a retry time and the
        error); returns the rows with nothing left in flight."""
        done: list[int] = []
        in_flight, claims = self._in_flight, self._claims
        for uuid in uuids:
            seq = in_flight.pop(uuid, None)
            if seq is None:
                continue
            claim = claims[seq]
            claim.open.discard(uuid)
            if keep is not None:
                claim.kept.append(uuid)
                claim.retry_at, claim.error = keep
            if not claim.open:
                done.append(seq)
        return done

    def _finish(self, db: sqlite3.Connection, seqs: Sequence[int]) -> None:
        """Resolved rows, in the caller's transaction: deleted, or rescheduled with their nacked events."""
        deleted: list[int] = []
        for seq in seqs:
            claim = self._claims.pop(seq)
            if not claim.kept:
                deleted.append(seq)
                continue
            nacked = set(claim.kept)
            kept = [event for uuid, event in claim.events.items() if uuid in nacked]
            if len(kept) == claim.count:
                db.execute(
                    "UPDATE outbox_rows SET next_attempt_at=?, attempts=attempts+1, last_error=? WHERE seq=?",
                    (claim.retry_at, claim.error, seq),
                )
                continue
            size = sum(event.size_bytes for event in kept)
            db.execute(
                "UPDATE outbox_rows SET uuids=?, payload=?, timestamps=?, events=?, size_bytes=?,"
                " next_attempt_at=?, attempts=attempts+1, last_error=? WHERE seq=?",
                (
                    "\n".join(event.uuid for event in kept),
                    b"\n".join(event.payload for event in kept).decode(),
                    "\n".join(event.timestamp or "" for event in kept),
                    len(kept),
                    size,
                    claim.retry_at,
                    claim.error,
                    seq,
                ),
            )
            _add_stats(db, len(kept) - claim.count, size - claim.size_bytes)
        for chunk in _chunks(deleted):
            counted = db.execute(
                f"DELETE FROM outbox_rows WHERE seq IN ({_placeholders(len(chunk))}) RETURNING events, size_bytes",
                chunk,
            ).fetchall()
            _add_stats(db, -sum(count for count, _ in counted), -sum(size for _, size in counted))

    # -- dead letters ------------------------------------------------------------------

    def dead_letter(self, events_or_uuids: Iterable[Mapping[str, Any] | str], *, reason: str) -> int:
        """Dead-letter claimed events (by uuid, or the events themselves) with the reason; returns how
        many were dead-lettered. An event dict not in flight (say, one refused before queueing) is
        stored as a dead letter from the dict itself; a uuid not in flight is ignored."""
        letters: list[tuple[str, Mapping[str, Any], int]] = []
        done: list[int] = []
        for item in events_or_uuids:
            uuid = item if isinstance(item, str) else item["uuid"]
            seq = self._in_flight.get(uuid)
            if seq is not None:
                claim = self._claims[seq]
                letters.append((uuid, claim.events[uuid], claim.attempts))
                done += self._resolve([uuid])
            elif isinstance(item, Mapping):  # a dict, or a claimed StoredEvent
                letters.append((uuid, item, 0))
        now = self._clock()
        with self._writing("outbox dead-letter failed") as db:
            for uuid, event, attempts in letters:
                payload = _encode_for_dead_letter(event)
                db.execute(
                    "INSERT OR REPLACE INTO dead_letters (uuid, payload, size_bytes, reason, failed_at, attempts)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (uuid, payload, len(payload.encode()), reason, now, attempts),
                )
            self._finish(db, done)
            self._trim_dead_letters(db)
        return len(letters)

    def _trim_dead_letters(self, db: sqlite3.Connection) -> None:
        """Delete the oldest dead letters beyond the bounds (inside the caller's transaction)."""
        rows, size = db.execute("SELECT rows, bytes FROM dead_letter_stats WHERE id=0").fetchone()
        if rows <= self.dead_letter_max_rows and size <= self.dead_letter_max_bytes:
            return
        excess_rows, excess_bytes = rows - self.dead_letter_max_rows, size - self.dead_letter_max_bytes
        doomed: list[str] = []
        for uuid, row_bytes in db.execute("SELECT uuid, size_bytes FROM dead_letters ORDER BY failed_at, uuid"):
            if len(doomed) >= excess_rows and excess_bytes <= 0:
                break
            doomed.append(uuid)
            excess_bytes -= row_bytes
        for chunk in _chunks(doomed):
            db.execute(f"DELETE FROM dead_letters WHERE uuid IN ({_placeholders(len(chunk))})", chunk)
        self.dead_letters_dropped += len(doomed)

    def dead_letter_expired(self, uuids: Iterable[str], *, enqueued_before: float, reason: str) -> list[str]:
        """Dead-letter those of the claimed uuids enqueued before the given time; returns their uuids."""
        expired = [
            uuid
            for uuid in uuids
            if (seq := self._in_flight.get(uuid)) is not None and self._claims[seq].enqueued_at < enqueued_before
        ]
        if expired:
            self.dead_letter(expired, reason=reason)
        return expired

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest dead letters: uuid, event (its name), reason, failed_at, attempts, payload."""
        with self._reading() as reader:
            rows = reader.execute(
                "SELECT uuid, CAST(payload AS BLOB), reason, failed_at, attempts FROM dead_letters"
                " ORDER BY failed_at DESC, uuid LIMIT ?",
                (limit,),
            ).fetchall()
        letters = []
        for uuid, payload, reason, failed_at, attempts in rows:
            try:
                event = json.loads(payload)
            except (TypeError, ValueError):  # a corrupt row moved aside: shown as stored
                event = {"event": None, "corrupt_payload": bytes(payload or b"").decode("utf-8", "replace")}
            if not isinstance(event, dict):
                event = {"event": None, "corrupt_payload": event}
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
        return int(self._read_one("SELECT rows FROM dead_letter_stats WHERE id=0")[0])

    def replay_dead_letters(self, uuids: Sequence[str] | None = None) -> int:
        """Move dead letters (all, or those uuids) back to the outbox, due now, a row each; returns the
        count."""
        now = self._clock()
        replayed = 0
        with self._writing("dead-letter replay failed") as db:
            if uuids is None:
                selected = [u for (u,) in db.execute("SELECT uuid FROM dead_letters")]
            else:
                selected = list(uuids)
            for chunk in _chunks(selected):
                marks = _placeholders(len(chunk))
                sizes = db.execute(
                    "INSERT INTO outbox_rows (uuids, payload, timestamps, events, size_bytes, enqueued_at,"
                    f" next_attempt_at) SELECT uuid, payload, '', 1, size_bytes, ?, ? FROM dead_letters"
                    f" WHERE uuid IN ({marks}) RETURNING size_bytes",
                    (now, now, *chunk),
                ).fetchall()
                _add_stats(db, len(sizes), sum(size for (size,) in sizes))
                replayed += len(sizes)
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


def _row_events(uuids: Any, payload: Any, timestamps: Any, count: Any, size: Any) -> list[StoredEvent] | str:
    """A row's events, or why the row is corrupt."""
    for name, value, kind in (
        ("uuids", uuids, str),
        ("payload", payload, bytes),
        ("timestamps", timestamps, str),
        ("events", count, int),
        ("size_bytes", size, int),
    ):
        if type(value) is not kind:
            return f"{name} is {type(value).__name__}"
    lines = payload.split(b"\n")
    ids = uuids.split("\n")
    stamps = timestamps.split("\n")
    if not len(lines) == len(ids) == count or len(stamps) not in (1, count):
        return f"{len(ids)} uuids and {len(lines)} payload lines for {count} events"
    if len(stamps) != count:  # a replayed dead letter, or a row from an older file: read when needed
        stamps = [""] * count
    return [
        StoredEvent(uuid, line, len(line), stamp or None) for uuid, line, stamp in zip(ids, lines, stamps, strict=True)
    ]


def _encode_for_dead_letter(event: Mapping[str, Any]) -> str:
    """The event's JSON; one that cannot be encoded (a corrupt payload, a value JSON cannot hold) is kept
    as its text with the undecodable bytes replaced, so that dead-lettering it never fails."""
    try:
        return encode_event(event)
    except (TypeError, ValueError):  # UnicodeDecodeError is a ValueError
        payload = getattr(event, "payload", None)
        if isinstance(payload, bytes):
            return payload.decode("utf-8", "replace")
        return json.dumps({"uuid": str(event.get("uuid")), "unencodable": repr(dict(event))[:4096]})


def _add_stats(db: sqlite3.Connection, events: int, size_bytes: int) -> None:
    """Count events added to (or, negative, deleted from) the outbox, in the caller's transaction."""
    if events or size_bytes:
        db.execute("UPDATE outbox_stats SET rows=rows+?, bytes=bytes+? WHERE id=0", (events, size_bytes))


def _recount(db: sqlite3.Connection) -> None:
    db.execute(
        "UPDATE outbox_stats SET rows=(SELECT coalesce(sum(events), 0) FROM outbox_rows),"
        " bytes=(SELECT coalesce(sum(size_bytes), 0) FROM outbox_rows) WHERE id=0"
    )


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
