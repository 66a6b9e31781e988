"""Persistence: one SQLite database (WAL) shared by the api and the worker."""

from services.store.database import Database, NotFoundError

__all__ = ["Database", "NotFoundError"]
