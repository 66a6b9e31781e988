"""The database schema, applied idempotently at start, then :func:`migrate` for files made by an
earlier version (``CREATE TABLE IF NOT EXISTS`` never adds a column to an existing table)."""

import sqlite3

LEGACY_API_TOKEN_TTL_S = 30 * 86400.0
LEGACY_GUEST_TOKEN_TTL_S = 7 * 86400.0
"""The lifetime given to a credential issued before tokens expired (the default TTLs of that change)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    email TEXT UNIQUE,
    name TEXT,
    guest INTEGER NOT NULL,
    credits INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS credentials (
    token_sha256 TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('api_token', 'guest_session')),
    user_id TEXT NOT NULL REFERENCES users(id),
    session_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,  -- NULL only on a row from before expiry existed, until migrate() fills it
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS credentials_by_user ON credentials (user_id, kind);
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    filename TEXT NOT NULL,
    path TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    duration_s REAL NOT NULL,
    sample_rate_hz INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('stem_separation', 'audio_analysis', 'render')),
    file_id TEXT NOT NULL REFERENCES files(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    carrier TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_expires_at REAL,
    claimed_by TEXT,  -- host:pid of the worker running the attempt, so a worker on that host can see it died
    result TEXT,
    error_code TEXT,
    error_message TEXT,
    credits_spent INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_claimable ON jobs (status, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_file ON jobs (file_id, kind);
DROP INDEX IF EXISTS jobs_by_status_kind;
CREATE INDEX IF NOT EXISTS jobs_queue_stats ON jobs (status, kind, created_at, lease_expires_at);  -- queue gauges
CREATE TABLE IF NOT EXISTS analyses (
    file_id TEXT PRIMARY KEY REFERENCES files(id),
    result TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS billing_events (
    event_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    credits INTEGER NOT NULL,
    amount_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    received_at REAL NOT NULL
);
"""


_CREDENTIAL_COLUMNS = (("expires_at", "REAL"), ("revoked_at", "REAL"))
_JOB_COLUMNS = (("claimed_by", "TEXT"),)


def _credential_columns(conn: sqlite3.Connection) -> set[str]:
    return {row[1] for row in conn.execute("PRAGMA table_info(credentials)")}


def _job_columns(conn: sqlite3.Connection) -> set[str]:
    return {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}


def migrate(conn: sqlite3.Connection) -> None:
    """Add the columns an older database file lacks. An up-to-date file is only read (no write lock at
    start); an old one is migrated in one immediate transaction, so the api and the worker opening it
    at once migrate it once."""
    if all(name in _credential_columns(conn) for name, _type in _CREDENTIAL_COLUMNS) and all(
        name in _job_columns(conn) for name, _type in _JOB_COLUMNS
    ):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for name, sql_type in _JOB_COLUMNS:
            if name not in _job_columns(conn):
                conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {sql_type}")
        columns = _credential_columns(conn)
        for name, sql_type in _CREDENTIAL_COLUMNS:
            if name not in columns:
                conn.execute(f"ALTER TABLE credentials ADD COLUMN {name} {sql_type}")
        if "expires_at" not in columns:
            conn.execute(
                "UPDATE credentials SET expires_at = created_at + "
                "CASE kind WHEN 'api_token' THEN ? ELSE ? END WHERE expires_at IS NULL",
                (LEGACY_API_TOKEN_TTL_S, LEGACY_GUEST_TOKEN_TTL_S),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
