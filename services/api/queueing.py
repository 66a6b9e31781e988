"""Enqueueing background jobs with the request's trace context (W3C traceparent + baggage)."""

from __future__ import annotations

import sqlite3

from opentelemetry import propagate

from services.store import jobs


def current_carrier() -> dict[str, str]:
    """The current trace context and baggage (the caller's identity) as W3C headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def enqueue(conn: sqlite3.Connection, *, kind: str, file_id: str, user_id: str, credits_spent: int = 0) -> jobs.Job:
    return jobs.enqueue(
        conn, kind=kind, file_id=file_id, user_id=user_id, carrier=current_carrier(), credits_spent=credits_spent
    )
