"""The job queue the api fills and the worker drains, in the shared database.

A claim is one ``UPDATE ... WHERE status = 'queued'`` (or a running job whose lease has expired:
its worker crashed) inside an immediate transaction; each job row carries the W3C trace context
(``carrier``) of the request that created it.

A claim records the claiming worker (``host:pid``) in ``claimed_by``: a worker on the same host whose
process is gone (killed) gives its job up at once, without waiting for its lease to run out.

Every claim adds one to ``attempts``, so (job id, attempts) names one attempt: the fencing token.
The worker renews its lease (``renew``) and finishes the job (``complete``, ``fail``) only while the
row is still 'running' under its attempt; an attempt whose job was claimed again (its lease ran out)
writes nothing, so a job completes or fails at most once.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.store.database import NotFoundError, new_id, now_s

JOB_KINDS = ("stem_separation", "audio_analysis", "render")
ATTEMPTS_EXHAUSTED = "attempts_exhausted"


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    file_id: str
    user_id: str
    status: str
    carrier: dict[str, str]
    attempts: int
    result: dict[str, Any] | None
    error_code: str | None
    error_message: str | None
    credits_spent: int

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(
            id=row["id"],
            kind=row["kind"],
            file_id=row["file_id"],
            user_id=row["user_id"],
            status=row["status"],
            carrier=json.loads(row["carrier"]),
            attempts=row["attempts"],
            result=json.loads(row["result"]) if row["result"] else None,
            error_code=row["error_code"],
            error_message=row["error_message"],
            credits_spent=row["credits_spent"],
        )

    def public(self) -> dict[str, Any]:
        """What the api shows of a job."""
        body: dict[str, Any] = {"job_id": self.id, "kind": self.kind, "file_id": self.file_id, "status": self.status}
        if self.result is not None:
            body["result"] = _without_paths(self.result)
        if self.error_code:
            body["error"] = {"code": self.error_code, "message": self.error_message}
        return body


def _without_paths(value: Any) -> Any:
    """A result as the api shows it: server-side file paths (keys ending in ``path``) left out."""
    if isinstance(value, dict):
        return {key: _without_paths(item) for key, item in value.items() if not key.endswith("path")}
    return value


def enqueue(
    conn: sqlite3.Connection,
    *,
    kind: str,
    file_id: str,
    user_id: str,
    carrier: dict[str, str],
    credits_spent: int = 0,
) -> Job:
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    job_id = new_id("r" if kind == "render" else "j")
    now = now_s()
    conn.execute(
        "INSERT INTO jobs (id, kind, file_id, user_id, status, carrier, credits_spent, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
        (job_id, kind, file_id, user_id, json.dumps(carrier), credits_spent, now, now),
    )
    return get_job(conn, job_id)


def process_alive(pid: int) -> bool:
    """Whether a process with that id exists on this host (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, run by another user
        return True
    return True


def _release_dead(conn: sqlite3.Connection, worker: str, now: float, alive: Callable[[int], bool]) -> None:
    """Expire the leases of running jobs claimed by a process of this host that no longer exists."""
    host = worker.rpartition(":")[0] + ":"
    rows = conn.execute(
        "SELECT id, claimed_by FROM jobs WHERE status = 'running' AND lease_expires_at >= ? "
        "AND substr(claimed_by, 1, ?) = ?",
        (now, len(host), host),
    ).fetchall()
    for row in rows:
        pid_text = row["claimed_by"][len(host) :]
        if pid_text.isdigit() and row["claimed_by"] != worker and not alive(int(pid_text)):
            conn.execute("UPDATE jobs SET lease_expires_at = ? WHERE id = ?", (now - 1.0, row["id"]))


def claim(
    conn: sqlite3.Connection,
    *,
    lease_s: float,
    max_attempts: int,
    exhausted: list[Job] | None = None,
    worker: str | None = None,
    alive: Callable[[int], bool] = process_alive,
) -> Job | None:
    """Take the oldest queued job, or a running one whose lease expired, inside the caller's transaction.

    A job that has already been claimed ``max_attempts`` times fails with ``attempts_exhausted``
    instead of crashing workers forever; each such job, as failed, is appended to ``exhausted`` so
    that the caller reports it (once the transaction has committed).

    ``worker`` (``host:pid``) is recorded on the claimed job; running jobs claimed by a process of
    the same host that ``alive`` says is gone are claimable at once.
    """
    now = now_s()
    if worker is not None:
        _release_dead(conn, worker, now, alive)
    while True:
        row = conn.execute(
            "SELECT id, attempts FROM jobs WHERE status = 'queued' "
            "OR (status = 'running' AND lease_expires_at < ?) ORDER BY created_at LIMIT 1",
            (now,),
        ).fetchone()
        if row is None:
            return None
        if row["attempts"] >= max_attempts:
            _finish(conn, row["id"], "failed", error=(ATTEMPTS_EXHAUSTED, f"gave up after {row['attempts']} attempts"))
            if exhausted is not None:
                exhausted.append(get_job(conn, row["id"]))
            continue
        claimed = conn.execute(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_expires_at = ?, updated_at = ?, "
            "claimed_by = ? WHERE id = ? AND (status = 'queued' OR (status = 'running' AND lease_expires_at < ?))",
            (now + lease_s, now, worker, row["id"], now),
        ).rowcount
        if claimed:
            return get_job(conn, row["id"])


@dataclass(frozen=True)
class QueueStats:
    """Jobs of one kind waiting for a worker: queued ones (and when the oldest was queued, None when
    there is none), and orphaned ones: 'running' past their lease, their worker dead or stuck."""

    kind: str
    queued: int
    oldest_created_at: float | None
    orphaned: int = 0


def queue_stats(conn: sqlite3.Connection, *, now: float | None = None) -> list[QueueStats]:
    """Per job kind (every kind, zero included): queued jobs, the oldest one's creation time, orphans.

    One query, answered from the ``jobs_queue_stats`` index alone (a covering index scan).
    """
    rows = conn.execute(
        "SELECT kind, SUM(status = 'queued') AS queued, "
        "MIN(CASE WHEN status = 'queued' THEN created_at END) AS oldest, "
        "SUM(status = 'running' AND lease_expires_at < ?) AS orphaned "
        "FROM jobs WHERE status IN ('queued', 'running') GROUP BY kind",
        (now_s() if now is None else now,),
    ).fetchall()
    found = {row["kind"]: (row["queued"], row["oldest"], row["orphaned"]) for row in rows}
    return [QueueStats(kind, *found.get(kind, (0, None, 0))) for kind in JOB_KINDS]


def renew(conn: sqlite3.Connection, job_id: str, *, attempt: int, lease_s: float) -> bool:
    """Extend the lease of attempt ``attempt`` of a running job; False when the job is no longer that
    attempt's (claimed again after its lease ran out, or finished): its worker must stop."""
    now = now_s()
    return bool(
        conn.execute(
            "UPDATE jobs SET lease_expires_at = ?, updated_at = ? WHERE id = ? AND status = 'running' AND attempts = ?",
            (now + lease_s, now, job_id, attempt),
        ).rowcount
    )


def complete(conn: sqlite3.Connection, job_id: str, result: dict[str, Any], *, attempt: int | None = None) -> bool:
    """Mark the job completed; with ``attempt``, only while it is running under that attempt (fenced).
    Returns whether the row was written."""
    return _finish(conn, job_id, "completed", result=result, attempt=attempt)


def fail(conn: sqlite3.Connection, job_id: str, *, code: str, message: str, attempt: int | None = None) -> bool:
    """Mark the job failed (a render's credits go back); fenced by ``attempt`` like ``complete``."""
    return _finish(conn, job_id, "failed", error=(code, message), attempt=attempt)


def _finish(
    conn: sqlite3.Connection,
    job_id: str,
    status: str,
    *,
    result: dict[str, Any] | None = None,
    error: tuple[str, str] | None = None,
    attempt: int | None = None,
) -> bool:
    code, message = error or (None, None)
    sql = (
        "UPDATE jobs SET status = ?, result = ?, error_code = ?, error_message = ?, lease_expires_at = NULL, "
        "updated_at = ? WHERE id = ?"
    )
    params: tuple[Any, ...] = (
        status,
        json.dumps(result) if result is not None else None,
        code,
        message,
        now_s(),
        job_id,
    )
    if attempt is not None:
        sql += " AND status = 'running' AND attempts = ?"
        params += (attempt,)
    if not conn.execute(sql, params).rowcount:
        return False
    if status == "failed":  # a failed render gives its credits back
        conn.execute(
            "UPDATE users SET credits = credits + (SELECT credits_spent FROM jobs WHERE id = ?) "
            "WHERE id = (SELECT user_id FROM jobs WHERE id = ?)",
            (job_id, job_id),
        )
    return True


def get_job(conn: sqlite3.Connection, job_id: str, *, user_id: str | None = None, kind: str | None = None) -> Job:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None or (user_id is not None and row["user_id"] != user_id) or (kind and row["kind"] != kind):
        raise NotFoundError(job_id)
    return Job.from_row(row)


def list_jobs(conn: sqlite3.Connection, *, file_id: str, kind: str) -> list[Job]:
    rows = conn.execute(
        "SELECT * FROM jobs WHERE file_id = ? AND kind = ? ORDER BY created_at", (file_id, kind)
    ).fetchall()
    return [Job.from_row(row) for row in rows]


def cached_analysis(conn: sqlite3.Connection, file_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT result FROM analyses WHERE file_id = ?", (file_id,)).fetchone()
    return json.loads(row["result"]) if row else None


def cache_analysis(conn: sqlite3.Connection, file_id: str, result: dict[str, Any]) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO analyses (file_id, result, created_at) VALUES (?, ?, ?)",
        (file_id, json.dumps(result), now_s()),
    )
