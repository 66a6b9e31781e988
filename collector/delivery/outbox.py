"""The durable outbox: PostHog events waiting for delivery, in SQLite (WAL).

Rows move pending -> in-flight (claimed) -> deleted (ack) / pending again with a later
``next_attempt_at`` (nack) / the ``dead_letters`` table with a reason. A claim marks its rows
in flight in this process's memory only (no write): a row stays pending on disk until it is
acked, so a crash at any point loses nothing: a claimed batch that was delivered but not acked
is delivered again, and PostHog de-duplicates it by uuid. Opening the outbox also returns rows
an older version marked in flight on disk to pending.

Durability: ``journal_mode=WAL`` with ``synchronous=NORMAL``. A commit appends to the WAL
with a write(2) before ``put`` returns, so a killed process (kill -9, OOM) loses nothing;
only an OS crash or power loss can lose the last transactions, because the WAL is fsynced
at checkpoints rather than at every commit. ``synchronous="FULL"`` closes that window at
the cost of one fsync per ``put``.

The row count and payload bytes live in ``outbox_stats``, updated once per statement by the
statement's own transaction (``_add_stats``), and those of the dead letters in
``dead_letter_stats``, kept by triggers: so they are right for every process that opens the file
(the CLI replays dead letters while the collector runs) and cost no scan. The outbox has no
per-row trigger and one index (its uuid): each index or trigger adds to every put and every ack.

Dead letters are bounded (``dead_letter_max_rows``, ``dead_letter_max_bytes``): beyond either bound
the oldest are deleted in the transaction that adds new ones, and counted (``dead_letters_dropped``).

A corrupt row (a payload that is not a JSON object, a size that is not a number, as a bad disk or a
hand edit leaves them) never stops delivery: the claim that meets one moves it to the dead letters
with the reason ``corrupt outbox row: ...`` (counted in ``corrupt_rows``) and claims again, and
the delivery worker dead-letters an event that cannot be decoded when the exporter fails on it.

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
from pathlib import Path
from typing import Any

from collector.defaults import (
    DEFAULT_DEAD_LETTER_MAX_BYTES,
    DEFAULT_DEAD_LETTER_MAX_ROWS,
    DEFAULT_OUTBOX_MAX_BYTES,
)
from collector.events import StoredEvent, encode_event

__all__ = ["Outbox", "OutboxError", "OutboxFullError"]

_PENDING = 0
_IN_FLIGHT = 1
"""Written by older versions only: returned to pending when the outbox is opened."""
# SQLite >= 3.32 allows 32766 host parameters per statement; stay far below.
_MAX_PARAMS = 500

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
-- kept per statement by the code (_add_stats), not by per-row triggers
DROP TRIGGER IF EXISTS outbox_stats_insert;
DROP TRIGGER IF EXISTS outbox_stats_delete;
-- claims read in seq order; rows waiting for a retry are few (the worker backs off as a whole)
DROP INDEX IF EXISTS outbox_next_attempt;
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

# what a claim reads of a row; typeof() lets a row whose payload is not text be told apart
_CLAIM_SQL = (
    "SELECT seq, uuid, CAST(payload AS BLOB), size_bytes, json_extract(payload, '$.timestamp')"
    " FROM outbox WHERE state=? AND next_attempt_at<=?"
    " ORDER BY seq LIMIT ?"
)
# the same rows, checked one by one (after a claim failed on one of them)
_CORRUPT_SQL = (
    "SELECT seq, CASE"
    " WHEN typeof(payload) != 'text' THEN 'payload is ' || typeof(payload)"
    " WHEN NOT json_valid(payload) THEN 'payload is not valid JSON'"
    " WHEN json_type(payload) != 'object' THEN 'payload is a JSON ' || json_type(payload)"
    " WHEN typeof(size_bytes) != 'integer' THEN 'size_bytes is ' || typeof(size_bytes)"
    " WHEN typeof(uuid) != 'text' THEN 'uuid is ' || typeof(uuid)"
    " END FROM outbox WHERE state=? AND next_attempt_at<=?"
    " ORDER BY seq LIMIT ?"
)


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
        dead_letter_max_rows: int = DEFAULT_DEAD_LETTER_MAX_ROWS,
        dead_letter_max_bytes: int = DEFAULT_DEAD_LETTER_MAX_BYTES,
        create: bool = True,
    ) -> None:
        """Open (or create) the outbox at path.

        recover_in_flight: return rows claimed by a previous (crashed) process to pending.
        The collector does; an inspector opening the file beside a running collector (the
        CLI) must not, or it would hand the running worker's claimed rows out again.
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
        """uuid -> seq of the rows claimed and not yet acked, nacked or dead-lettered."""
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
            stored_bytes, last_seq = db.execute(
                "SELECT bytes, (SELECT max(seq) FROM outbox) FROM outbox_stats WHERE id=0"
            ).fetchone()
            if stored_bytes + incoming_bytes > self.max_bytes:
                raise OutboxFullError(
                    f"outbox full: {stored_bytes} + {incoming_bytes} bytes > max_bytes {self.max_bytes}"
                )
            inserted: int = db.executemany(
                "INSERT OR IGNORE INTO outbox"
                " (uuid, payload, size_bytes, enqueued_at, next_attempt_at)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            ).rowcount
            if inserted != len(rows):  # some were there already: the new rows are numbered after last_seq
                (incoming_bytes,) = db.execute(
                    "SELECT coalesce(sum(size_bytes), 0) FROM outbox WHERE seq > ?", (last_seq or 0,)
                ).fetchone()
            _add_stats(db, inserted, incoming_bytes)
            return inserted

    # -- gauges ------------------------------------------------------------------------

    def depth(self) -> int:
        """Rows pending or in flight (dead letters excluded)."""
        return int(self._read_one("SELECT rows FROM outbox_stats WHERE id=0")[0])

    def size_bytes(self) -> int:
        """Bytes of stored payloads pending or in flight: what max_bytes bounds."""
        return int(self._read_one("SELECT bytes FROM outbox_stats WHERE id=0")[0])

    def oldest_age_s(self) -> float | None:
        # rows are numbered in enqueue order: the first one is the oldest (an index lookup)
        row = self._read_one("SELECT CAST(enqueued_at AS REAL) FROM outbox ORDER BY seq LIMIT 1")
        return None if row is None else max(0.0, self._clock() - row[0])

    def next_due_at(self) -> float | None:
        """When the earliest pending row becomes due, or None when nothing is pending."""
        due: float | None = self._read_one(
            "SELECT CAST(min(next_attempt_at) AS REAL) FROM outbox WHERE state=?", (_PENDING,)
        )[0]
        return due

    # -- delivery ----------------------------------------------------------------------

    def claim(self, *, max_events: int, max_bytes: int) -> list[StoredEvent]:
        """Mark due pending rows in flight, oldest first, and return their events.

        The batch holds at most max_events rows and max_bytes of payload, but always at
        least one row when one is due (an oversized event must still come out, to be
        dead-lettered by the worker). The rows are read through the reader connection and
        marked in flight in memory: a claim writes nothing. Claims are meant for one
        delivery thread.
        """
        now = self._clock()
        in_flight = self._in_flight
        params = (_PENDING, now, max_events + len(in_flight))
        try:
            with self._read_lock:
                candidates = self._reader.execute(_CLAIM_SQL, params).fetchall()
        except sqlite3.Error as exc:
            # a payload json_extract cannot read: move the corrupt rows aside, then claim again
            if not self._quarantine(params):
                raise OutboxError(f"outbox claim failed: {exc}") from exc
            with self._reading("outbox claim failed") as reader:
                candidates = reader.execute(_CLAIM_SQL, params).fetchall()
        batch: list[StoredEvent] = []
        batch_bytes = 0
        for seq, uuid, payload, size, timestamp in candidates:
            if uuid in in_flight:
                continue
            if type(size) is not int or type(uuid) is not str or type(payload) is not bytes:
                # a corrupt row among the first max_events: moved aside, then the claim starts over
                if not self._quarantine(params):
                    raise OutboxError(f"outbox claim failed: row {seq} cannot be read")
                for event in batch:
                    del in_flight[event.uuid]
                return self.claim(max_events=max_events, max_bytes=max_bytes)
            if batch and (batch_bytes + size > max_bytes or len(batch) == max_events):
                break
            batch_bytes += size
            in_flight[uuid] = seq
            batch.append(StoredEvent(uuid, payload, size, timestamp))
        return batch

    def _quarantine(self, params: tuple[Any, ...]) -> int:
        """Move the corrupt rows among the due ones a claim reads to the dead letters; returns how many."""
        with self._reading("outbox claim failed") as reader:
            corrupt = [(seq, problem) for seq, problem in reader.execute(_CORRUPT_SQL, params) if problem]
        if not corrupt:
            return 0
        now = self._clock()
        with self._writing("outbox dead-letter failed") as db:
            for seq, problem in corrupt:
                # the size of what is stored, whatever the row says; a uuid of another type as text
                db.execute(
                    "INSERT OR REPLACE INTO dead_letters (uuid, payload, size_bytes, reason, failed_at, attempts)"
                    " SELECT CAST(uuid AS TEXT), coalesce(payload, ''), length(CAST(payload AS BLOB)), ?, ?,"
                    " CASE typeof(attempts) WHEN 'integer' THEN attempts ELSE 0 END"
                    " FROM outbox WHERE seq=?",
                    (f"corrupt outbox row: {problem}", now, seq),
                )
                db.execute("DELETE FROM outbox WHERE seq=?", (seq,))
            _recount(db)  # an edited size is not the size once stored (a rare path)
            self._trim_dead_letters(db)
        self.corrupt_rows += len(corrupt)
        return len(corrupt)

    def ack(self, uuids: Iterable[str]) -> None:
        """Delivered: delete the rows (claimed rows by their seq, others by uuid).

        One short transaction per _MAX_PARAMS rows, releasing the lock in between, so that a
        put from the receiver never waits behind a whole batch (deleting is idempotent).
        """
        seqs, others = self._release(uuids)
        for column, keys in (("seq", seqs), ("uuid", others)):
            for chunk in _chunks(keys):
                with self._writing("outbox ack failed") as db:
                    _delete(db, f"{column} IN ({_placeholders(len(chunk))})", chunk)

    def _release(self, uuids: Iterable[str]) -> tuple[list[int], list[str]]:
        """Take rows out of the in-flight set: the seqs of those that were claimed, the other uuids."""
        seqs: list[int] = []
        others: list[str] = []
        in_flight = self._in_flight
        for uuid in uuids:
            seq = in_flight.pop(uuid, None)
            if seq is None:
                others.append(uuid)
            else:
                seqs.append(seq)
        return seqs, others

    def nack(self, uuids: Iterable[str], *, retry_at: float, error: str) -> None:
        """Not delivered: back to pending, due again at retry_at (wall-clock seconds)."""
        uuids = list(uuids)
        self._release(uuids)
        with self._writing("outbox nack failed") as db:
            for chunk in _chunks(uuids):
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
        self._release(item if isinstance(item, str) else item["uuid"] for item in items)
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
                    _delete(db, "uuid=?", (uuid,))
                elif isinstance(item, Mapping):  # a dict, or a claimed StoredEvent
                    payload = _encode_for_dead_letter(item)
                    db.execute(
                        "INSERT OR REPLACE INTO dead_letters"
                        " (uuid, payload, size_bytes, reason, failed_at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (uuid, payload, len(payload.encode()), reason, now),
                    )
                else:
                    continue
                count += 1
            self._trim_dead_letters(db)
        return count

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
                sizes = db.execute(
                    "INSERT OR IGNORE INTO outbox"
                    " (uuid, payload, size_bytes, enqueued_at, next_attempt_at)"
                    f" SELECT uuid, payload, size_bytes, ?, ? FROM dead_letters WHERE uuid IN ({marks})"
                    " RETURNING size_bytes",
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


def _add_stats(db: sqlite3.Connection, rows: int, size_bytes: int) -> None:
    """Count rows added to (or, negative, deleted from) the outbox, in the caller's transaction."""
    if rows:
        db.execute("UPDATE outbox_stats SET rows=rows+?, bytes=bytes+? WHERE id=0", (rows, size_bytes))


def _delete(db: sqlite3.Connection, where: str, params: Sequence[Any]) -> None:
    """Delete outbox rows and count them out, in the caller's transaction."""
    sizes = [size for (size,) in db.execute(f"DELETE FROM outbox WHERE {where} RETURNING size_bytes", params)]
    if all(type(size) is int for size in sizes):
        _add_stats(db, -len(sizes), -sum(sizes))
    else:  # a size edited by hand: count the rows again (a rare path)
        _recount(db)


def _recount(db: sqlite3.Connection) -> None:
    db.execute(
        "UPDATE outbox_stats SET rows=(SELECT count(*) FROM outbox),"
        " bytes=(SELECT coalesce(sum(size_bytes), 0) FROM outbox) WHERE id=0"
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
