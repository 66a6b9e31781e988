"""The SQLite database: one connection per thread, WAL, short immediate-mode transactions."""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.store.schema import SCHEMA, migrate

_BUSY_TIMEOUT_S = 10.0


class NotFoundError(LookupError):
    """No row with that id (or not visible to that user)."""


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def now_s() -> float:
    return time.time()


class Database:
    """A SQLite file shared by the api and worker processes.

    ``transaction()`` opens ``BEGIN IMMEDIATE``: the write lock is taken at the start, so two
    processes claiming the same job serialize instead of failing half-way.
    """

    def __init__(self, path: Path, *, busy_timeout_s: float = _BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connection().executescript(SCHEMA)  # idempotent DDL; executescript manages its own commit
        migrate(self._connection())

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # a COMMIT that found the database busy leaves the transaction open
                conn.execute("ROLLBACK")
            raise

    def read(self) -> sqlite3.Connection:
        """A connection for single-statement reads (autocommit)."""
        return self._connection()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
