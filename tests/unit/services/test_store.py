import threading
from pathlib import Path

import pytest

from services.store import accounts, catalog, jobs
from services.store.database import Database


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(tmp_path / "db.sqlite")


@pytest.fixture
def file_id(db: Database) -> str:
    with db.transaction() as conn:
        user_id = accounts.create_user(conn, email="a@example.test", name=None, guest=False, credits=10)
        project_id = catalog.create_project(conn, user_id=user_id, name="p")
        record = catalog.FileRecord(
            id=catalog.new_file_id(),
            project_id=project_id,
            user_id=user_id,
            filename="a.wav",
            path="/x",
            size_bytes=1,
            duration_s=1.0,
            sample_rate_hz=8000,
            channels=1,
        )
        catalog.insert_file(conn, record)
    return record.id


def _user_of(db: Database, file_id: str) -> str:
    return catalog.get_file(db.read(), file_id).user_id


def _enqueue(db: Database, file_id: str, kind: str = "audio_analysis", credits_spent: int = 0) -> jobs.Job:
    with db.transaction() as conn:
        return jobs.enqueue(
            conn,
            kind=kind,
            file_id=file_id,
            user_id=_user_of(db, file_id),
            carrier={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
            credits_spent=credits_spent,
        )


def _claim(db: Database, lease_s: float = 60.0, max_attempts: int = 3) -> jobs.Job | None:
    with db.transaction() as conn:
        return jobs.claim(conn, lease_s=lease_s, max_attempts=max_attempts)


def test_claim_takes_queued_jobs_oldest_first_once(db: Database, file_id: str) -> None:
    first, second = _enqueue(db, file_id), _enqueue(db, file_id)
    claimed = [_claim(db), _claim(db), _claim(db)]
    assert [job.id if job else None for job in claimed] == [first.id, second.id, None]
    assert claimed[0].status == "running" and claimed[0].attempts == 1
    assert claimed[0].carrier == first.carrier


def test_a_job_whose_lease_expired_is_claimed_again(db: Database, file_id: str) -> None:
    job = _enqueue(db, file_id)
    assert _claim(db, lease_s=-1.0).id == job.id  # the worker "crashes": its lease is already over
    again = _claim(db)
    assert (again.id, again.attempts) == (job.id, 2)
    assert _claim(db) is None  # a live lease is not taken


def test_a_job_claimed_too_often_fails_instead_of_looping(db: Database, file_id: str) -> None:
    job = _enqueue(db, file_id)
    assert _claim(db, lease_s=-1.0, max_attempts=1).id == job.id
    assert _claim(db, max_attempts=1) is None
    failed = jobs.get_job(db.read(), job.id)
    assert (failed.status, failed.error_code) == ("failed", "attempts_exhausted")


def test_a_job_that_ran_out_of_attempts_is_handed_to_the_caller_to_report(db: Database, file_id: str) -> None:
    job, waiting = _enqueue(db, file_id), _enqueue(db, file_id, kind="stem_separation")
    assert _claim(db, lease_s=-1.0, max_attempts=1).id == job.id
    exhausted: list[jobs.Job] = []
    with db.transaction() as conn:
        claimed = jobs.claim(conn, lease_s=60.0, max_attempts=1, exhausted=exhausted)
    assert claimed.id == waiting.id  # the next job is still claimed in the same call
    (failed,) = exhausted
    assert (failed.id, failed.status, failed.error_code, failed.attempts) == (job.id, "failed", "attempts_exhausted", 1)
    assert failed.carrier == job.carrier  # its trace context, for its report


def test_queue_stats_count_queued_jobs_by_kind_with_the_oldest(db: Database, file_id: str) -> None:
    assert [(s.kind, s.queued, s.oldest_created_at) for s in jobs.queue_stats(db.read())] == [
        ("stem_separation", 0, None),
        ("audio_analysis", 0, None),
        ("render", 0, None),
    ]
    first, second = _enqueue(db, file_id), _enqueue(db, file_id)
    stems = _enqueue(db, file_id, kind="stem_separation")
    assert [_claim(db).id, _claim(db).id] == [first.id, second.id]  # running now: no longer queued
    _enqueue(db, file_id)
    stats = {s.kind: s for s in jobs.queue_stats(db.read())}
    assert {kind: s.queued for kind, s in stats.items()} == {"stem_separation": 1, "audio_analysis": 1, "render": 0}
    created_at = db.read().execute("SELECT created_at FROM jobs WHERE id = ?", (stems.id,)).fetchone()[0]
    assert stats["stem_separation"].oldest_created_at == created_at
    assert {kind: s.orphaned for kind, s in stats.items()} == {"stem_separation": 0, "audio_analysis": 0, "render": 0}
    lease_end = db.read().execute("SELECT lease_expires_at FROM jobs WHERE id = ?", (first.id,)).fetchone()[0]
    later = {s.kind: s for s in jobs.queue_stats(db.read(), now=lease_end + 1.0)}  # both workers died
    assert (later["audio_analysis"].orphaned, later["audio_analysis"].queued) == (2, 1)


def test_complete_and_fail_record_the_outcome(db: Database, file_id: str) -> None:
    done, broken = _enqueue(db, file_id), _enqueue(db, file_id)
    with db.transaction() as conn:
        jobs.complete(conn, done.id, {"image_path": "/secret/x.png", "stems": {"a": {"path": "/p", "n": 1}}})
        jobs.fail(conn, broken.id, code="corrupt_audio", message="bad")
    assert jobs.get_job(db.read(), done.id).public()["result"] == {"stems": {"a": {"n": 1}}}
    assert jobs.get_job(db.read(), broken.id).public()["error"] == {"code": "corrupt_audio", "message": "bad"}


def test_a_failed_render_gives_its_credits_back(db: Database, file_id: str) -> None:
    user_id = _user_of(db, file_id)
    with db.transaction() as conn:
        accounts.spend_credits(conn, user_id, 5)
    render = _enqueue(db, file_id, kind="render", credits_spent=5)
    assert accounts.get_user(db.read(), user_id)["credits"] == 5
    with db.transaction() as conn:
        jobs.fail(conn, render.id, code="processing_error", message="boom")
    assert accounts.get_user(db.read(), user_id)["credits"] == 10


def test_spending_more_than_the_balance_changes_nothing(db: Database, file_id: str) -> None:
    user_id = _user_of(db, file_id)
    with pytest.raises(accounts.InsufficientCreditsError), db.transaction() as conn:
        accounts.spend_credits(conn, user_id, 11)
    assert accounts.get_user(db.read(), user_id)["credits"] == 10


def test_a_billing_event_credits_once(db: Database, file_id: str) -> None:
    user_id = _user_of(db, file_id)
    purchase = dict(event_id="evt_1", user_id=user_id, credits=20, amount_cents=999, currency="EUR")
    with db.transaction() as conn:
        assert accounts.record_purchase(conn, **purchase) is True
    with db.transaction() as conn:
        assert accounts.record_purchase(conn, **purchase) is False
    assert accounts.get_user(db.read(), user_id)["credits"] == 30


def test_credentials_resolve_by_kind_and_store_only_a_hash(db: Database, file_id: str) -> None:
    user_id = _user_of(db, file_id)
    with db.transaction() as conn:
        token = accounts.issue_credential(conn, user_id=user_id, session_id="s_1", kind="api_token", ttl_s=60.0)
    assert accounts.resolve_credential(db.read(), token, kind="api_token") == accounts.Principal(user_id, "s_1", False)
    assert accounts.resolve_credential(db.read(), token, kind="guest_session") is None
    stored = [row[0] for row in db.read().execute("SELECT token_sha256 FROM credentials")]
    assert token not in stored and len(stored) == 1


def test_a_credential_stops_resolving_once_expired_or_revoked(db: Database, file_id: str) -> None:
    user_id = _user_of(db, file_id)
    with db.transaction() as conn:
        expired = accounts.issue_credential(conn, user_id=user_id, session_id="s_1", kind="api_token", ttl_s=-1.0)
        live = accounts.issue_credential(conn, user_id=user_id, session_id="s_2", kind="api_token", ttl_s=60.0)
    assert accounts.resolve_credential(db.read(), expired, kind="api_token") is None
    principal = accounts.resolve_credential(db.read(), live, kind="api_token")
    assert principal is not None
    with db.transaction() as conn:
        assert accounts.revoke_credential(conn, principal.credential) is True
        assert accounts.revoke_credential(conn, principal.credential) is False
    assert accounts.resolve_credential(db.read(), live, kind="api_token") is None


def test_a_guest_converts_once_and_loses_its_guest_token(db: Database) -> None:
    with db.transaction() as conn:
        guest = accounts.create_user(conn, email=None, name=None, guest=True, credits=3)
        token = accounts.issue_credential(conn, user_id=guest, session_id="s_g", kind="guest_session", ttl_s=60.0)
    with db.transaction() as conn:
        accounts.upgrade_guest(conn, guest, email="first@example.test", name=None, credits=10)
    assert accounts.resolve_credential(db.read(), token, kind="guest_session") is None
    assert accounts.was_converted_guest(db.read(), token) is True
    with pytest.raises(accounts.AlreadySignedUpError), db.transaction() as conn:
        accounts.upgrade_guest(conn, guest, email="second@example.test", name=None, credits=10)
    user = accounts.get_user(db.read(), guest)
    assert (user["email"], user["credits"]) == ("first@example.test", 13)


def test_an_existing_database_file_gains_token_expiry_and_revocation(tmp_path: Path) -> None:
    """A file made before credentials expired: its columns are added once, its tokens get a lifetime."""
    import sqlite3
    import time

    from services.store.schema import LEGACY_API_TOKEN_TTL_S

    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT UNIQUE, name TEXT, guest INTEGER NOT NULL,"
        " credits INTEGER NOT NULL, created_at REAL NOT NULL);"
        "CREATE TABLE credentials (token_sha256 TEXT PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN"
        " ('api_token', 'guest_session')), user_id TEXT NOT NULL REFERENCES users(id), session_id TEXT NOT NULL,"
        " created_at REAL NOT NULL);"
    )
    now = time.time()
    old.execute("INSERT INTO users VALUES ('u_old', 'o@example.test', NULL, 0, 5, ?)", (now,))
    old.execute(
        "INSERT INTO credentials VALUES (?, 'api_token', 'u_old', 's_old', ?)",
        (accounts._sha256("pg_recent"), now),
    )
    old.execute(
        "INSERT INTO credentials VALUES (?, 'api_token', 'u_old', 's_old', ?)",
        (accounts._sha256("pg_ancient"), now - 2 * LEGACY_API_TOKEN_TTL_S),
    )
    old.commit()
    old.close()
    db = Database(path)
    Database(path)  # a second process opening the same file: nothing left to migrate
    assert accounts.resolve_credential(db.read(), "pg_recent", kind="api_token") is not None
    assert accounts.resolve_credential(db.read(), "pg_ancient", kind="api_token") is None
    assert accounts.get_user(db.read(), "u_old")["credits"] == 5


def test_concurrent_claims_take_each_job_once(tmp_path: Path, file_id: str, db: Database) -> None:
    queued = {_enqueue(db, file_id).id for _ in range(30)}
    other = Database(db.path)  # a second process would open its own connections
    claimed: list[list[str]] = [[], []]

    def drain(database: Database, into: list[str]) -> None:
        while (job := _claim(database)) is not None:
            into.append(job.id)

    threads = [
        threading.Thread(target=drain, args=(database, into))
        for database, into in zip((db, other), claimed, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(claimed[0] + claimed[1]) == sorted(queued)  # every job once, none twice


def test_renewal_and_completion_are_fenced_by_the_attempt(db: Database, file_id: str) -> None:
    job = _enqueue(db, file_id, kind="render", credits_spent=5)
    first = _claim(db, lease_s=-1.0)  # its lease has already run out
    second = _claim(db, lease_s=60.0)  # so another claim takes the job over
    assert (first.id, first.attempts, second.id, second.attempts) == (job.id, 1, job.id, 2)
    credits = accounts.get_user(db.read(), job.user_id)["credits"]
    with db.transaction() as conn:
        assert not jobs.renew(conn, job.id, attempt=1, lease_s=60.0)
        assert not jobs.complete(conn, job.id, {"stale": True}, attempt=1)
        assert not jobs.fail(conn, job.id, code="processing_error", message="stale", attempt=1)
        assert jobs.renew(conn, job.id, attempt=2, lease_s=60.0)
    assert accounts.get_user(db.read(), job.user_id)["credits"] == credits  # the stale failure refunded nothing
    with db.transaction() as conn:
        assert jobs.complete(conn, job.id, {"ok": True}, attempt=2)
        assert not jobs.complete(conn, job.id, {"again": True}, attempt=2)  # completes at most once
        assert not jobs.renew(conn, job.id, attempt=2, lease_s=60.0)  # finished: nothing to renew
    done = jobs.get_job(db.read(), job.id)
    assert (done.status, done.result) == ("completed", {"ok": True})


def test_a_job_of_a_dead_worker_on_this_host_is_claimable_at_once(db: Database, file_id: str) -> None:
    job = _enqueue(db, file_id)
    other_job = _enqueue(db, file_id)
    with db.transaction() as conn:
        assert jobs.claim(conn, lease_s=600.0, max_attempts=3, worker="host-a:101").id == job.id
        assert jobs.claim(conn, lease_s=600.0, max_attempts=3, worker="host-b:102").id == other_job.id
    dead = {101, 102}
    with db.transaction() as conn:  # the pid is gone on this host: its job is taken over, lease or not
        taken = jobs.claim(conn, lease_s=600.0, max_attempts=3, worker="host-a:200", alive=lambda pid: pid not in dead)
    assert (taken.id, taken.attempts) == (job.id, 2)
    assert db.read().execute("SELECT claimed_by FROM jobs WHERE id = ?", (job.id,)).fetchone()[0] == "host-a:200"
    with db.transaction() as conn:  # another host's process is never judged from here; a live one keeps its job
        assert jobs.claim(conn, lease_s=600.0, max_attempts=3, worker="host-a:300", alive=lambda pid: True) is None
        assert jobs.claim(conn, lease_s=600.0, max_attempts=3, worker="host-c:300", alive=lambda pid: False) is None


def test_an_existing_jobs_table_gains_claimed_by(tmp_path: Path, db: Database, file_id: str) -> None:
    import sqlite3

    job = _enqueue(db, file_id)
    db.close()
    old = sqlite3.connect(db.path)
    old.execute("ALTER TABLE jobs DROP COLUMN claimed_by")  # as a file from before the column
    old.close()
    reopened = Database(db.path)
    with reopened.transaction() as conn:
        assert jobs.claim(conn, lease_s=60.0, max_attempts=3, worker="h:1").id == job.id
    assert reopened.read().execute("SELECT claimed_by FROM jobs").fetchone()[0] == "h:1"
