"""Why a job failed, as exceptions named by their code (like ``AudioError`` and the api's errors).

``JobFailed("attempts_exhausted", ...)`` is an instance of a class ``attempts_exhausted``, so an
operation that fails with it reports ``error.type`` = the code, which analytics and alerts group by.
"""

from __future__ import annotations

import sqlite3

from services.coded_error import CodedError

ATTEMPTS_EXHAUSTED = "attempts_exhausted"
FILE_NOT_FOUND = "file_not_found"
FAULT_INJECTED = "fault_injected"
PROCESSING_ERROR = "processing_error"

_TRANSIENT_STORE_MESSAGES = ("database is locked", "database is busy", "database table is locked")


class JobFailed(CodedError):
    """A job that cannot be done; ``code`` is the machine-readable reason stored on the job."""

    code: str = "job_failed"


def is_transient_store_error(exc: BaseException) -> bool:
    """SQLite's "database is locked" / "busy": another process holds the write lock; trying again can work."""
    return isinstance(exc, sqlite3.OperationalError) and any(
        message in str(exc).lower() for message in _TRANSIENT_STORE_MESSAGES
    )
