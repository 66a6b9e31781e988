"""The outbox state machine: put (a row a put, bounded), claim, ack, nack, dead letters, crash resume."""

import json
import sqlite3
import threading

import pytest

from collector.delivery.outbox import Outbox, OutboxError, OutboxFullError
from collector.events import encode_event


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def put_each(box: Outbox, numbers) -> None:
    """Each event in a row of its own (a put each)."""
    for n in numbers:
        box.put([event(n)])


def claim_all(box: Outbox) -> list:
    return box.claim(max_events=10_000, max_bytes=2**30)


def event(n: int, **extra) -> dict:
    return {
        "event": "render_started",
        "distinct_id": f"user-{n}",
        "properties": {"n": n, **extra},
        "timestamp": "2026-11-28T04:00:00+00:00",
        "uuid": f"00000000-0000-4000-8000-{n:012d}",
    }


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def outbox(tmp_path, clock):
    box = Outbox(tmp_path / "outbox.db", clock=clock)
    yield box
    box.close()


def test_put_is_durable_in_one_row_and_a_claim_hands_out_each_uuid_once(outbox, tmp_path):
    assert outbox.put([event(1), event(2), event(1)]) == 2  # a put stores each uuid once
    assert outbox.put([event(2), event(3)]) == 2  # uuid 2 sent again while queued: stored again
    assert outbox.depth() == 4
    assert outbox.size_bytes() == sum(len(encode_event(event(n)).encode()) for n in (1, 2, 2, 3))
    # committed: another connection sees the rows while this one is still open
    other = sqlite3.connect(tmp_path / "outbox.db")
    try:
        assert other.execute("SELECT count(*), sum(events) FROM outbox_rows").fetchone() == (2, 4)
    finally:
        other.close()
    first = claim_all(outbox)  # the second row holds uuid 2, in flight: it waits
    assert [e["uuid"] for e in first] == [event(n)["uuid"] for n in (1, 2)]
    outbox.ack(e["uuid"] for e in first)
    second = claim_all(outbox)
    assert [e["uuid"] for e in second] == [event(n)["uuid"] for n in (2, 3)]  # PostHog de-duplicates by uuid
    outbox.ack(e["uuid"] for e in second)
    assert (outbox.depth(), outbox.size_bytes()) == (0, 0)


OLD_LAYOUT = """
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, payload TEXT NOT NULL, size_bytes INTEGER NOT NULL,
    enqueued_at REAL NOT NULL, state INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT
);
CREATE TABLE outbox_stats (id INTEGER PRIMARY KEY CHECK (id = 0), rows INTEGER NOT NULL, bytes INTEGER NOT NULL);
INSERT INTO outbox_stats VALUES (0, 0, 0);
CREATE TRIGGER outbox_stats_insert AFTER INSERT ON outbox BEGIN
    UPDATE outbox_stats SET rows = rows + 1, bytes = bytes + NEW.size_bytes WHERE id = 0; END;
CREATE INDEX outbox_next_attempt ON outbox (next_attempt_at);
"""


def test_an_outbox_written_by_an_older_version_is_moved_into_rows_and_keeps_its_counts(tmp_path, clock):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # one row per event, an event in flight (state 1), one waiting
        db.executescript(OLD_LAYOUT)
        for n, state, due in ((1, 1, 0), (2, 0, 0), (3, 0, 5_000)):
            payload = encode_event(event(n))
            db.execute(
                "INSERT INTO outbox (uuid, payload, size_bytes, enqueued_at, state, next_attempt_at, attempts)"
                " VALUES (?, ?, ?, 0, ?, ?, 2)",
                (event(n)["uuid"], payload, len(payload.encode()), state, due),
            )
    box = Outbox(path, clock=clock)
    try:
        size = len(encode_event(event(1)).encode())
        assert (box.depth(), box.size_bytes()) == (3, 3 * size)
        claimed = claim_all(box)
        assert claimed == [event(1), event(2)]  # the third is due later
        assert claimed[0]["timestamp"] == event(1)["timestamp"]  # read from the payload: not kept beside it
        box.ack(e["uuid"] for e in claimed)
        assert (box.depth(), box.size_bytes(), box.next_due_at()) == (1, size, 5_000)
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'outbox'").fetchall() == []
            assert db.execute("SELECT attempts FROM outbox_rows").fetchall() == [(2,)]
    finally:
        box.close()


def test_put_without_uuid_is_refused(outbox):
    bad = event(1)
    del bad["uuid"]
    with pytest.raises(ValueError, match="uuid"):
        outbox.put([bad])
    assert outbox.depth() == 0


def test_claim_ack_nack_cycle(outbox, clock):
    put_each(outbox, range(5))
    first = outbox.claim(max_events=3, max_bytes=2**20)
    assert [e["uuid"] for e in first] == [event(n)["uuid"] for n in range(3)]
    assert first[0] == event(0)  # the event comes back exactly as stored
    second = outbox.claim(max_events=10, max_bytes=2**20)
    assert [e["properties"]["n"] for e in second] == [3, 4]
    assert outbox.claim(max_events=10, max_bytes=2**20) == []  # all in flight

    outbox.ack(e["uuid"] for e in first)
    assert outbox.depth() == 2
    outbox.nack([e["uuid"] for e in second], retry_at=clock.now + 30, error="HTTP 503")
    assert outbox.claim(max_events=10, max_bytes=2**20) == []  # not due yet
    assert outbox.next_due_at() == clock.now + 30
    clock.now += 30
    assert [e["properties"]["n"] for e in outbox.claim(max_events=10, max_bytes=2**20)] == [3, 4]


def test_claim_is_bounded_by_bytes_but_returns_at_least_one(outbox):
    put_each(outbox, range(4))
    size = len(encode_event(event(0)).encode())
    assert len(outbox.claim(max_events=10, max_bytes=2 * size)) == 2
    assert len(outbox.claim(max_events=10, max_bytes=1)) == 1


def test_full_outbox_refuses_the_whole_put(tmp_path, clock):
    size = len(encode_event(event(0)).encode())
    box = Outbox(tmp_path / "o.db", max_bytes=3 * size, clock=clock)
    try:
        assert box.put([event(0), event(1)]) == 2
        with pytest.raises(OutboxFullError):
            box.put([event(2), event(3)])
        assert box.depth() == 2  # nothing of the refused put was stored
        box.ack(e["uuid"] for e in claim_all(box))
        assert box.put([event(2), event(3)]) == 2
    finally:
        box.close()


def test_restart_returns_in_flight_rows_to_pending(tmp_path, clock):
    box = Outbox(tmp_path / "o.db", clock=clock)
    put_each(box, range(3))
    claimed = box.claim(max_events=2, max_bytes=2**20)
    box.ack([claimed[0]["uuid"]])
    box.close()  # claimed[1] was never acked: the process "crashed" with it in flight

    reopened = Outbox(tmp_path / "o.db", clock=clock)
    try:
        assert reopened.depth() == 2
        assert reopened.size_bytes() == 2 * len(encode_event(event(0)).encode())
        again = reopened.claim(max_events=10, max_bytes=2**20)
        assert sorted(e["properties"]["n"] for e in again) == [1, 2]
    finally:
        reopened.close()


def test_a_claim_writes_nothing(outbox, tmp_path):
    """In flight is the claiming process's memory: on disk a claimed row is pending until it is acked."""
    put_each(outbox, range(3))
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        before = db.execute("SELECT * FROM outbox_rows ORDER BY seq").fetchall()
    claimed = outbox.claim(max_events=2, max_bytes=2**20)
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        assert db.execute("SELECT * FROM outbox_rows ORDER BY seq").fetchall() == before
    outbox.dead_letter([claimed[0]["uuid"]], reason="HTTP 400")
    outbox.nack([claimed[1]["uuid"]], retry_at=0.0, error="HTTP 503")
    # neither is in flight any more: the nacked one is claimed again, the dead letter is gone
    assert [e["properties"]["n"] for e in outbox.claim(max_events=10, max_bytes=2**20)] == [1, 2]


def test_an_inspector_does_not_recover_a_running_workers_claims(outbox, tmp_path, clock):
    put_each(outbox, (1, 2))
    claimed = outbox.claim(max_events=1, max_bytes=2**20)
    inspector = Outbox(tmp_path / "outbox.db", clock=clock, recover_in_flight=False)
    try:
        assert inspector.depth() == 2
        assert [e["uuid"] for e in outbox.claim(max_events=10, max_bytes=2**20)] == [event(2)["uuid"]]
        assert claimed[0]["uuid"] == event(1)["uuid"]  # still in flight, not handed out twice
    finally:
        inspector.close()


def test_counts_are_shared_by_every_connection(outbox, tmp_path, clock):
    """The CLI replays dead letters beside a running collector: both see the same depth and bytes."""
    put_each(outbox, range(3))
    outbox.claim(max_events=1, max_bytes=2**20)
    outbox.dead_letter([event(0)["uuid"]], reason="HTTP 400")
    cli = Outbox(tmp_path / "outbox.db", clock=clock, recover_in_flight=False)
    try:
        assert cli.replay_dead_letters() == 1
        assert cli.depth() == outbox.depth() == 3
        assert outbox.size_bytes() == 3 * len(encode_event(event(0)).encode())
    finally:
        cli.close()
    outbox.ack(e["uuid"] for e in outbox.claim(max_events=10, max_bytes=2**20))
    assert (outbox.depth(), outbox.size_bytes()) == (0, 0)


def test_dead_letters_keep_the_reason_and_replay(outbox, clock):
    put_each(outbox, range(3))
    outbox.claim(max_events=10, max_bytes=2**20)
    assert outbox.dead_letter([event(1)["uuid"]], reason="HTTP 400: invalid uuid") == 1
    # an event that never reached the outbox is dead-lettered from the dict itself
    assert outbox.dead_letter([event(9)], reason="event is 1000000 bytes") == 1
    assert outbox.depth() == 2
    letters = {d["uuid"]: d for d in outbox.dead_letters()}
    assert letters[event(1)["uuid"]] == {
        "uuid": event(1)["uuid"],
        "event": "render_started",
        "reason": "HTTP 400: invalid uuid",
        "failed_at": clock.now,
        "attempts": 0,
        "payload": event(1),
    }
    assert letters[event(9)["uuid"]]["reason"] == "event is 1000000 bytes"
    assert outbox.dead_letter_count() == 2

    assert outbox.replay_dead_letters([event(1)["uuid"]]) == 1
    assert outbox.dead_letter_count() == 1
    assert outbox.depth() == 3
    assert outbox.replay_dead_letters() == 1
    assert outbox.dead_letters() == []
    due = outbox.claim(max_events=10, max_bytes=2**20)
    assert sorted(e["properties"]["n"] for e in due) == [1, 9]


def test_dead_letter_expired_only_moves_old_rows(outbox, clock):
    outbox.put([event(1)])
    clock.now += 100
    outbox.put([event(2)])
    uuids = [event(1)["uuid"], event(2)["uuid"]]
    claim_all(outbox)
    assert outbox.dead_letter_expired(uuids, enqueued_before=clock.now - 50, reason="too old") == [uuids[0]]
    assert [d["uuid"] for d in outbox.dead_letters()] == [uuids[0]]
    assert outbox.depth() == 1


def test_oldest_age(outbox, clock):
    assert outbox.oldest_age_s() is None
    outbox.put([event(1)])
    clock.now += 12.5
    outbox.put([event(2)])
    assert outbox.oldest_age_s() == 12.5


def test_storage_trouble_is_an_outbox_error(tmp_path):
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError):
        Outbox(path)


def test_locked_database_is_an_outbox_error(tmp_path, clock):
    box = Outbox(tmp_path / "o.db", clock=clock)
    box._db.execute("PRAGMA busy_timeout=0")
    blocker = sqlite3.connect(tmp_path / "o.db", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(OutboxError):
            box.put([event(1)])
        blocker.execute("ROLLBACK")
        assert box.put([event(1)]) == 1
    finally:
        blocker.close()
        box.close()


def test_concurrent_put_and_claim_lose_nothing(outbox):
    total = 2_000
    delivered: list[str] = []

    def producer(offset: int) -> None:
        for start in range(offset, offset + total // 2, 50):
            outbox.put([event(n) for n in range(start, start + 50)])

    threads = [threading.Thread(target=producer, args=(k * total // 2,)) for k in range(2)]
    for thread in threads:
        thread.start()
    while True:  # until a claim after the producers finished finds nothing
        finished = not any(t.is_alive() for t in threads)
        batch = outbox.claim(max_events=100, max_bytes=2**20)
        outbox.ack(e["uuid"] for e in batch)
        delivered += [e["uuid"] for e in batch]
        if finished and not batch:
            break
    for thread in threads:
        thread.join()
    assert sorted(delivered) == sorted(event(n)["uuid"] for n in range(total))
    assert outbox.depth() == 0 and outbox.size_bytes() == 0


def test_payload_is_compact_json(outbox, tmp_path):
    outbox.put([event(1, note="é")])
    (payload,) = sqlite3.connect(tmp_path / "outbox.db").execute("SELECT payload FROM outbox_rows").fetchone()
    assert payload == json.dumps(event(1, note="é"), separators=(",", ":"), ensure_ascii=False)


def test_unwritable_location_is_an_outbox_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the data dir should be")
    with pytest.raises(OutboxError):
        Outbox(blocker / "outbox.db")


def test_claim_carries_the_stored_json(outbox):
    outbox.put([event(1, note="é")])
    (claimed,) = outbox.claim(max_events=10, max_bytes=2**20)
    assert claimed == event(1, note="é")
    assert claimed.payload == encode_event(event(1, note="é")).encode()


def test_non_finite_floats_are_stored_as_null(outbox):
    outbox.put([event(1, values=[float("nan"), float("-inf"), 0.5])])
    (claimed,) = outbox.claim(max_events=10, max_bytes=2**20)
    assert claimed["properties"]["values"] == [None, None, 0.5]
    assert b"NaN" not in claimed.payload and b"Infinity" not in claimed.payload


def test_a_claimed_event_is_decoded_only_when_read(outbox):
    outbox.put([event(1)])
    (claimed,) = outbox.claim(max_events=10, max_bytes=2**20)
    assert claimed["uuid"] == event(1)["uuid"] and claimed["timestamp"] == event(1)["timestamp"]
    assert claimed.size_bytes == len(claimed.payload)
    assert claimed._event is None  # uuid, timestamp and size came from the row
    assert claimed["properties"] == {"n": 1} and dict(claimed) == event(1)


def test_reads_never_wait_for_a_write(outbox):
    """Gauges and the claim's select use the reader connection: a put holding the writer
    (here: its lock, held by the test) does not stall them."""
    outbox.put([event(1), event(2)])
    seen = []
    with outbox._lock:
        reader = threading.Thread(
            target=lambda: seen.append(
                (outbox.depth(), outbox.size_bytes(), outbox.oldest_age_s(), outbox.next_due_at())
                + (outbox.dead_letter_count(),)
            )
        )
        reader.start()
        reader.join(timeout=10)
        assert not reader.is_alive()
    assert seen[0][0] == 2 and seen[0][4] == 0


def test_checkpoint_keeps_the_wal_small(tmp_path, clock):
    outbox = Outbox(tmp_path / "outbox.db", clock=clock, max_bytes=2**30)
    try:
        wal = tmp_path / "outbox.db-wal"
        for start in range(0, 8000, 200):
            outbox.put([event(n, pad="x" * 800) for n in range(start, start + 200)])
        # over SQLite's automatic threshold (1000 pages, 4 MiB): the writer leaves it to checkpoint()
        assert wal.stat().st_size > 8 * 2**20
        while batch := outbox.claim(max_events=5000, max_bytes=4 * 2**20):
            outbox.ack(e["uuid"] for e in batch)
        outbox.checkpoint()
        for n in range(10_000, 10_020):
            outbox.put([event(n)])  # the first write after a complete checkpoint restarts the WAL
            outbox.checkpoint()
        probe = sqlite3.connect(tmp_path / "outbox.db")
        try:
            _, wal_frames, _ = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            probe.close()
        assert 0 <= wal_frames < 100
        assert outbox.depth() == 20
    finally:
        outbox.close()


def test_a_claimed_event_dead_lettered_after_its_row_is_gone_keeps_its_payload(outbox):
    outbox.put([event(1)])
    (claimed,) = outbox.claim(max_events=10, max_bytes=2**20)
    outbox.ack([claimed["uuid"]])
    assert encode_event(claimed) == claimed.payload.decode()
    assert outbox.dead_letter([claimed], reason="kept from the claimed copy") == 1
    (letter,) = outbox.dead_letters()
    assert letter["payload"] == event(1) and letter["reason"] == "kept from the claimed copy"


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("UPDATE outbox_rows SET timestamps = X'37' WHERE uuids = ?", "timestamps is bytes"),
        ("UPDATE outbox_rows SET size_bytes = 'many' WHERE uuids = ?", "size_bytes is str"),
        ("UPDATE outbox_rows SET events = 2 WHERE uuids = ?", "1 uuids and 1 payload lines for 2 events"),
        ("UPDATE outbox_rows SET uuids = uuids || char(10) || 'x' WHERE uuids = ?", "2 uuids and 1 payload lines"),
    ],
)
def test_a_corrupt_row_is_moved_aside_whole_and_never_stops_a_claim(outbox, tmp_path, sql, problem):
    put_each(outbox, range(5))
    other = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)  # as a bad disk or a hand edit
    try:
        other.execute(sql, (event(1)["uuid"],))
    finally:
        other.close()
    claimed = claim_all(outbox)
    assert [e["uuid"] for e in claimed] == [event(n)["uuid"] for n in (0, 2, 3, 4)]
    (letter,) = outbox.dead_letters()
    assert letter["uuid"].startswith(event(1)["uuid"])
    assert letter["reason"].startswith(f"corrupt outbox row: {problem}")
    assert outbox.corrupt_rows == 1
    assert (outbox.depth(), outbox.dead_letter_count()) == (4, 1)
    outbox.ack(e["uuid"] for e in claimed)
    assert (outbox.depth(), outbox.size_bytes()) == (0, 0)


def test_dead_letters_are_bounded_oldest_first_and_counted(tmp_path, clock):
    box = Outbox(tmp_path / "outbox.db", clock=clock, dead_letter_max_rows=3)
    try:
        for n in range(5):
            clock.now += 1
            box.put([event(n)])
            claim_all(box)
            box.dead_letter([event(n)["uuid"]], reason="HTTP 400")
        assert [letter["uuid"] for letter in box.dead_letters()] == [event(n)["uuid"] for n in (4, 3, 2)]
        assert (box.dead_letter_count(), box.dead_letters_dropped) == (3, 2)
        box.dead_letter([event(4)], reason="again")  # replacing a dead letter keeps the count right
        assert (box.dead_letter_count(), box.dead_letters_dropped) == (3, 2)
    finally:
        box.close()
    size = len(encode_event(event(0)).encode())
    box = Outbox(tmp_path / "outbox.db", clock=clock, dead_letter_max_bytes=2 * size)  # bytes bound too
    try:
        clock.now += 1
        box.dead_letter([event(9)], reason="HTTP 400")
        assert [letter["uuid"] for letter in box.dead_letters()] == [event(n)["uuid"] for n in (9, 4)]
        assert box.dead_letters_dropped == 2
    finally:
        box.close()


def test_a_file_from_before_dead_letter_stats_is_counted(tmp_path, clock):
    box = Outbox(tmp_path / "outbox.db", clock=clock)
    put_each(box, range(3))
    box.claim(max_events=2, max_bytes=2**20)
    box.dead_letter([event(0)["uuid"], event(1)["uuid"]], reason="HTTP 400")
    box.close()
    old = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
    old.execute("DROP TABLE dead_letter_stats")  # as an earlier version left the file
    old.close()
    box = Outbox(tmp_path / "outbox.db", clock=clock)
    try:
        assert box.dead_letter_count() == 2
        box.replay_dead_letters()
        assert (box.dead_letter_count(), box.depth()) == (0, 3)
    finally:
        box.close()


def test_an_inspector_never_creates_an_outbox(tmp_path):
    with pytest.raises(FileNotFoundError):
        Outbox(tmp_path / "missing" / "outbox.db", create=False, recover_in_flight=False)
    assert not (tmp_path / "missing").exists()


def test_an_event_that_cannot_be_encoded_is_still_dead_lettered(outbox):
    from collector.events import StoredEvent

    undecodable = StoredEvent("00000000-0000-4000-8000-000000000077", b'{"event":"\x80\xff"}', 19)
    unencodable = {**event(78), "properties": {"blob": object()}}
    assert outbox.dead_letter([undecodable, unencodable], reason="HTTP 400") == 2
    letters = {letter["uuid"]: letter for letter in outbox.dead_letters()}
    assert sorted(letters) == sorted([undecodable.uuid, event(78)["uuid"]])
    assert letters[event(78)["uuid"]]["payload"]["unencodable"].startswith("{")


def test_a_row_is_claimed_whole_and_rewritten_with_its_nacked_events_only(outbox, clock):
    outbox.put([event(n) for n in range(4)])
    claimed = outbox.claim(max_events=2, max_bytes=1)  # whole rows: bounds never cut one
    assert [e["properties"]["n"] for e in claimed] == [0, 1, 2, 3]
    outbox.ack([event(0)["uuid"], event(3)["uuid"]])
    assert outbox.depth() == 4  # the row stays until each of its events is resolved
    assert outbox.dead_letter([event(1)["uuid"]], reason="HTTP 400") == 1
    outbox.nack([event(2)["uuid"]], retry_at=clock.now + 30, error="HTTP 503")
    assert (outbox.depth(), outbox.size_bytes()) == (1, len(encode_event(event(2)).encode()))
    assert outbox.claim(max_events=10, max_bytes=2**20) == []  # not due yet
    clock.now += 30
    (again,) = outbox.claim(max_events=10, max_bytes=2**20)
    assert again == event(2) and again.timestamp == event(2)["timestamp"]
    outbox.ack([again["uuid"]])
    assert (outbox.depth(), outbox.size_bytes()) == (0, 0)
    assert [letter["uuid"] for letter in outbox.dead_letters()] == [event(1)["uuid"]]


def test_a_crash_in_the_middle_of_a_rows_delivery_sends_the_whole_row_again(tmp_path, clock):
    box = Outbox(tmp_path / "o.db", clock=clock)
    box.put([event(n) for n in range(3)])
    box.put([event(3)])
    first = box.claim(max_events=3, max_bytes=2**20)
    assert len(first) == 3
    box.ack([event(0)["uuid"], event(1)["uuid"]])  # delivered; event 2 was still being sent
    box.ack([e["uuid"] for e in box.claim(max_events=10, max_bytes=2**20)])  # the second row is done
    box.close()  # the process "crashed"

    reopened = Outbox(tmp_path / "o.db", clock=clock)
    try:
        assert reopened.depth() == 3
        assert [e["properties"]["n"] for e in reopened.claim(max_events=10, max_bytes=2**20)] == [0, 1, 2]
    finally:
        reopened.close()


def test_the_long_columns_come_last(outbox, tmp_path):
    """A row's payload spills over pages of its own: a column stored after it (the claim's next_attempt_at,
    the gauges' columns) could only be read by walking them, for every row the query looks at."""
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        columns = [name for _, name, *_ in db.execute("PRAGMA table_info(outbox_rows)")]
    assert columns[-3:] == ["uuids", "timestamps", "payload"]
