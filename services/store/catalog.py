"""Projects and the audio files uploaded into them."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from services.store.database import NotFoundError, new_id, now_s


@dataclass(frozen=True)
class FileRecord:
    id: str
    project_id: str
    user_id: str
    filename: str
    path: str
    size_bytes: int
    duration_s: float
    sample_rate_hz: int
    channels: int

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> FileRecord:
        return cls(**{field: row[field] for field in cls.__dataclass_fields__})


def create_project(conn: sqlite3.Connection, *, user_id: str, name: str) -> str:
    project_id = new_id("p")
    conn.execute(
        "INSERT INTO projects (id, user_id, name, created_at) VALUES (?, ?, ?, ?)",
        (project_id, user_id, name, now_s()),
    )
    return project_id


def get_project(conn: sqlite3.Connection, project_id: str, *, user_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM projects WHERE id = ? AND user_id = ?", (project_id, user_id)).fetchone()
    if row is None:
        raise NotFoundError(project_id)
    return row


def list_projects(conn: sqlite3.Connection, *, user_id: str) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM projects WHERE user_id = ? ORDER BY created_at", (user_id,)).fetchall()


def insert_file(conn: sqlite3.Connection, record: FileRecord) -> None:
    conn.execute(
        "INSERT INTO files (id, project_id, user_id, filename, path, size_bytes, duration_s, sample_rate_hz, "
        "channels, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            record.id,
            record.project_id,
            record.user_id,
            record.filename,
            record.path,
            record.size_bytes,
            record.duration_s,
            record.sample_rate_hz,
            record.channels,
            now_s(),
        ),
    )


def get_file(conn: sqlite3.Connection, file_id: str, *, user_id: str | None = None) -> FileRecord:
    """A file by id; with ``user_id``, only if that user owns it."""
    if user_id is None:
        row = conn.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
    else:
        row = conn.execute("SELECT * FROM files WHERE id = ? AND user_id = ?", (file_id, user_id)).fetchone()
    if row is None:
        raise NotFoundError(file_id)
    return FileRecord.from_row(row)


def list_files(conn: sqlite3.Connection, *, project_id: str) -> list[FileRecord]:
    rows = conn.execute("SELECT * FROM files WHERE project_id = ? ORDER BY created_at", (project_id,)).fetchall()
    return [FileRecord.from_row(row) for row in rows]


def new_file_id() -> str:
    return new_id("f")
