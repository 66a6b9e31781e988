"""The billing webhook's signature: HMAC-SHA256 over the raw body, ``X-Phonoglyph-Signature: sha256=<hex>``."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Phonoglyph-Signature"
SIGNATURE_PREFIX = "sha256="


def sign(body: bytes, secret: str) -> str:
    """The signature header value for ``body`` (as the billing provider, and the journeys, compute it)."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, signature: str | None) -> bool:
    return hmac.compare_digest(sign(body, secret), signature or "")
