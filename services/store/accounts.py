"""Users, their credentials (API tokens, guest sessions), credits and billing events."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass

from services.store.database import NotFoundError, new_id, now_s

API_TOKEN_PREFIX = "pg_"
GUEST_TOKEN_PREFIX = "pgs_"


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: the user, the session of the credential used, guest or not."""

    user_id: str
    session_id: str
    guest: bool


class EmailTakenError(ValueError):
    pass


class InsufficientCreditsError(Exception):
    def __init__(self, balance: int, needed: int) -> None:
        super().__init__(f"{needed} credits needed, {balance} available")
        self.balance = balance
        self.needed = needed


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(conn: sqlite3.Connection, *, email: str | None, name: str | None, guest: bool, credits: int) -> str:
    user_id = new_id("u")
    try:
        conn.execute(
            "INSERT INTO users (id, email, name, guest, credits, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (user_id, email, name, int(guest), credits, now_s()),
        )
    except sqlite3.IntegrityError as exc:
        raise EmailTakenError(email) from exc
    return user_id


def upgrade_guest(conn: sqlite3.Connection, user_id: str, *, email: str, name: str | None, credits: int) -> None:
    """A guest signs up: the same user row (same id, so one person in analytics) becomes a member."""
    try:
        conn.execute(
            "UPDATE users SET email = ?, name = ?, guest = 0, credits = credits + ? WHERE id = ? AND guest = 1",
            (email, name, credits, user_id),
        )
    except sqlite3.IntegrityError as exc:
        raise EmailTakenError(email) from exc


def issue_credential(conn: sqlite3.Connection, *, user_id: str, session_id: str, kind: str) -> str:
    """Create a secret token; only its SHA-256 is stored."""
    prefix = API_TOKEN_PREFIX if kind == "api_token" else GUEST_TOKEN_PREFIX
    token = prefix + secrets.token_urlsafe(24)
    conn.execute(
        "INSERT INTO credentials (token_sha256, kind, user_id, session_id, created_at) VALUES (?, ?, ?, ?, ?)",
        (_sha256(token), kind, user_id, session_id, now_s()),
    )
    return token


def resolve_credential(conn: sqlite3.Connection, token: str, *, kind: str) -> Principal | None:
    row = conn.execute(
        "SELECT c.user_id, c.session_id, u.guest FROM credentials c JOIN users u ON u.id = c.user_id "
        "WHERE c.token_sha256 = ? AND c.kind = ?",
        (_sha256(token), kind),
    ).fetchone()
    if row is None:
        return None
    return Principal(user_id=row["user_id"], session_id=row["session_id"], guest=bool(row["guest"]))


def get_user(conn: sqlite3.Connection, user_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None:
        raise NotFoundError(user_id)
    return row


def spend_credits(conn: sqlite3.Connection, user_id: str, credits: int) -> int:
    """Take credits inside the caller's transaction; returns the new balance."""
    balance = int(get_user(conn, user_id)["credits"])
    if balance < credits:
        raise InsufficientCreditsError(balance, credits)
    conn.execute("UPDATE users SET credits = credits - ? WHERE id = ?", (credits, user_id))
    return balance - credits


def record_purchase(
    conn: sqlite3.Connection, *, event_id: str, user_id: str, credits: int, amount_cents: int, currency: str
) -> bool:
    """Credit a purchase once per billing event id; False (and nothing changed) on a replay."""
    get_user(conn, user_id)
    inserted = conn.execute(
        "INSERT OR IGNORE INTO billing_events (event_id, user_id, credits, amount_cents, currency, received_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (event_id, user_id, credits, amount_cents, currency, now_s()),
    ).rowcount
    if inserted:
        conn.execute("UPDATE users SET credits = credits + ? WHERE id = ?", (credits, user_id))
    return bool(inserted)
