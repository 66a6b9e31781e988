"""The database schema, applied idempotently at start."""

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
    created_at REAL NOT NULL
);
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
