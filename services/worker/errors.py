"""Why a job failed, as exceptions named by their code (like ``AudioError`` and the api's errors).

``JobFailed("attempts_exhausted", ...)`` is an instance of a class ``attempts_exhausted``, so an
operation that fails with it reports ``error.type`` = the code, which analytics and alerts group by.
"""

from __future__ import annotations

import functools
import sqlite3

ATTEMPTS_EXHAUSTED = "attempts_exhausted"
FILE_NOT_FOUND = "file_not_found"
FAULT_INJECTED = "fault_injected"
PROCESSING_ERROR = "processing_error"

_TRANSIENT_STORE_MESSAGES = ("database is locked", "database is busy", "database table is locked")


class JobFailed(Exception):
    """A job that cannot be done; ``code`` is the machine-readable reason stored on the job."""

    code: str = "job_failed"

    def __new__(cls, code: str, message: str) -> JobFailed:
        return super().__new__(_coded(cls, code))

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return JobFailed, (self.code, self.message)


@functools.cache
def _coded(base: type[JobFailed], code: str) -> type[JobFailed]:
    return type(code, (base,), {"code": code, "__qualname__": code})


def is_transient_store_error(exc: BaseException) -> bool:
    """SQLite's "database is locked" / "busy": another process holds the write lock; trying again can work."""
    return isinstance(exc, sqlite3.OperationalError) and any(
        message in str(exc).lower() for message in _TRANSIENT_STORE_MESSAGES
    )
