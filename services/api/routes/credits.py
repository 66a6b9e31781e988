"""Credits: the balance, and purchases reported by the billing provider's signed webhook.

The webhook body is signed with HMAC-SHA256 over the raw bytes with ``PHONOGLYPH_BILLING_SECRET``,
sent as ``X-Phonoglyph-Signature: sha256=<hex>``. Each billing event id credits once: a replay
answers 200 ``{"status": "duplicate"}`` and changes nothing.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError

from instrumentation import identify, semconv, track
from services.api.dependencies import DbDep, PrincipalDep, SettingsDep
from services.api.errors import api_error
from services.billing import SIGNATURE_HEADER, verify
from services.store import accounts
from services.store.database import NotFoundError

router = APIRouter(tags=["credits"])

MAX_WEBHOOK_BYTES = 64 * 1024
MAX_AMOUNT_CENTS = 10**12
"""Above any real purchase, and within SQLite's 64-bit INTEGER: a larger amount is an invalid payload."""


class Purchase(BaseModel):
    user_id: Annotated[str, Field(min_length=1, max_length=200)]
    session_id: Annotated[str | None, Field(max_length=200)] = None
    credits: Annotated[int, Field(gt=0, le=1_000_000)]
    amount_cents: Annotated[int, Field(ge=0, le=MAX_AMOUNT_CENTS)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class BillingEvent(BaseModel):
    id: Annotated[str, Field(min_length=1, max_length=200)]
    type: str
    data: Purchase


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


async def _read_capped(request: Request, max_bytes: int) -> bytes:
    """The raw body, refused (413) as soon as it is over ``max_bytes``, declared or streamed."""
    too_large = api_error(413, "payload_too_large", f"the limit is {max_bytes} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    return bytes(body)


@router.get("/credits")
def balance(principal: PrincipalDep, db: DbDep) -> dict[str, int]:
    return {"balance": int(accounts.get_user(db.read(), principal.user_id)["credits"])}


@router.post("/billing/webhook")
async def billing_webhook(request: Request, db: DbDep, settings: SettingsDep) -> dict[str, object]:
    if not settings.billing_secret:
        raise api_error(503, "billing_not_configured", "PHONOGLYPH_BILLING_SECRET is not set")
    body = await _read_capped(request, MAX_WEBHOOK_BYTES)
    if not verify(body, settings.billing_secret, request.headers.get(SIGNATURE_HEADER)):
        raise api_error(401, "invalid_signature", "the signature does not match the body")
    try:
        event = BillingEvent.model_validate(json.loads(body, parse_constant=_refuse_constant))
    except (ValueError, ValidationError, RecursionError):  # RecursionError: nested too deep to parse
        raise api_error(400, "invalid_payload", "the body is not a billing event") from None
    if event.type != "credits.purchased":
        return {"status": "ignored", "event_id": event.id}
    purchase = event.data
    try:
        with db.transaction() as conn:
            credited = accounts.record_purchase(
                conn,
                event_id=event.id,
                user_id=purchase.user_id,
                credits=purchase.credits,
                amount_cents=purchase.amount_cents,
                currency=purchase.currency,
            )
            user = accounts.get_user(conn, purchase.user_id)
    except NotFoundError:
        raise api_error(404, "user_not_found", "the purchase names no known user") from None
    if not credited:
        return {"status": "duplicate", "event_id": event.id}
    with identify(user_id=purchase.user_id, session_id=purchase.session_id, guest=bool(user["guest"])):
        track(
            "credits_purchased",
            {
                semconv.CREDITS: purchase.credits,
                semconv.AMOUNT: purchase.amount_cents / 100,
                semconv.CURRENCY: purchase.currency,
            },
        )
    return {"status": "credited", "event_id": event.id, "balance": int(user["credits"])}
