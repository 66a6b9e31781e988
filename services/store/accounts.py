"""Users, their credentials (API tokens, guest sessions), credits and billing events.

A credential resolves while it is neither expired (``expires_at``, set when it is issued) nor revoked
(``revoked_at``): a guest's session token is revoked when the guest signs up.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass, field

from services.store.database import NotFoundError, new_id, now_s

API_TOKEN_PREFIX = "pg_"
GUEST_TOKEN_PREFIX = "pgs_"


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: the user, the session of the credential used, guest or not."""

    user_id: str
    session_id: str
    guest: bool
    credential: str = field(default="", compare=False, repr=False)
    """The SHA-256 of the token used (what ``revoke_credential`` takes)."""


class EmailTakenError(ValueError):
    pass


class AlreadySignedUpError(Exception):
    """The guest was converted meanwhile (a concurrent sign-up won): nothing was changed."""


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
    """A guest signs up: the same user row (same id, so one person in analytics) becomes a member, and
    the guest's session tokens are revoked. Conditional on the row still being a guest, inside the
    caller's (immediate) transaction: of two concurrent sign-ups exactly one converts the guest, the
    other raises ``AlreadySignedUpError``."""
    try:
        converted = conn.execute(
            "UPDATE users SET email = ?, name = ?, guest = 0, credits = credits + ? WHERE id = ? AND guest = 1",
            (email, name, credits, user_id),
        ).rowcount
    except sqlite3.IntegrityError as exc:
        raise EmailTakenError(email) from exc
    if not converted:
        raise AlreadySignedUpError(user_id)
    revoke_user_credentials(conn, user_id, kind="guest_session")


def issue_credential(conn: sqlite3.Connection, *, user_id: str, session_id: str, kind: str, ttl_s: float) -> str:
    """Create a secret token valid for ``ttl_s`` seconds; only its SHA-256 is stored."""
    prefix = API_TOKEN_PREFIX if kind == "api_token" else GUEST_TOKEN_PREFIX
    token = prefix + secrets.token_urlsafe(24)
    created_at = now_s()
    conn.execute(
        "INSERT INTO credentials (token_sha256, kind, user_id, session_id, created_at, expires_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (_sha256(token), kind, user_id, session_id, created_at, created_at + ttl_s),
    )
    return token


def resolve_credential(conn: sqlite3.Connection, token: str, *, kind: str) -> Principal | None:
    """The principal of a token of that kind, None when it is unknown, expired or revoked."""
    digest = _sha256(token)
    row = conn.execute(
        "SELECT c.user_id, c.session_id, u.guest FROM credentials c JOIN users u ON u.id = c.user_id "
        "WHERE c.token_sha256 = ? AND c.kind = ? AND c.revoked_at IS NULL AND c.expires_at > ?",
        (digest, kind, now_s()),
    ).fetchone()
    if row is None:
        return None
    return Principal(user_id=row["user_id"], session_id=row["session_id"], guest=bool(row["guest"]), credential=digest)


def was_converted_guest(conn: sqlite3.Connection, token: str) -> bool:
    """Whether ``token`` is the guest session token of a guest who has since signed up."""
    row = conn.execute(
        "SELECT u.guest FROM credentials c JOIN users u ON u.id = c.user_id "
        "WHERE c.token_sha256 = ? AND c.kind = 'guest_session' AND c.revoked_at IS NOT NULL",
        (_sha256(token),),
    ).fetchone()
    return row is not None and not row["guest"]


def revoke_credential(conn: sqlite3.Connection, credential: str) -> bool:
    """Revoke one credential by its SHA-256 (``Principal.credential``); False when already revoked."""
    return bool(
        conn.execute(
            "UPDATE credentials SET revoked_at = ? WHERE token_sha256 = ? AND revoked_at IS NULL", (now_s(), credential)
        ).rowcount
    )


def revoke_user_credentials(conn: sqlite3.Connection, user_id: str, *, kind: str) -> int:
    """Revoke every live credential of that kind of a user; how many were."""
    return conn.execute(
        "UPDATE credentials SET revoked_at = ? WHERE user_id = ? AND kind = ? AND revoked_at IS NULL",
        (now_s(), user_id, kind),
    ).rowcount


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
