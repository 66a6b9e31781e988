"""FastAPI dependencies: the database, the settings, and who the caller is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Request

from instrumentation import Identity
from services.api.errors import api_error
from services.settings import ServiceSettings
from services.store.accounts import Principal, resolve_credential
from services.store.database import Database

BEARER_PREFIX = "bearer "
GUEST_SESSION_HEADER = "x-guest-session"
_PRINCIPAL_STATE_KEY = "phonoglyph.principal"
"""Where the identity hook leaves the principal it resolved, so the request looks it up once."""


def get_db(request: Request) -> Database:
    return request.app.state.db


def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


def credentials_of(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """(kind, token) from ``Authorization: Bearer <api token>`` or ``X-Guest-Session: <token>``."""
    authorization = headers.get("authorization", "")
    if authorization[: len(BEARER_PREFIX)].lower() == BEARER_PREFIX:
        return "api_token", authorization[len(BEARER_PREFIX) :].strip()
    guest_token = headers.get(GUEST_SESSION_HEADER)
    if guest_token:
        return "guest_session", guest_token.strip()
    return None


def resolve(db: Database, headers: Mapping[str, str]) -> Principal | None:
    credentials = credentials_of(headers)
    if credentials is None:
        return None
    kind, token = credentials
    return resolve_credential(db.read(), token, kind=kind)


def identity_hook(db: Database):
    """``identify_request`` for instrument_fastapi: ASGI scope → the caller's Identity (or None).

    The principal it resolves is kept in the request's state for ``optional_principal``.
    """

    def identify_request(scope: Mapping[str, Any]) -> Identity | None:
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers", ())
            if name in (b"authorization", b"x-guest-session")
        }
        principal = resolve(db, headers)
        if isinstance(scope, dict):
            scope.setdefault("state", {})[_PRINCIPAL_STATE_KEY] = principal
        if principal is None:
            return None
        return Identity(user_id=principal.user_id, session_id=principal.session_id, guest=principal.guest)

    return identify_request


def optional_principal(request: Request, db: Annotated[Database, Depends(get_db)]) -> Principal | None:
    state = request.scope.get("state") or {}
    if _PRINCIPAL_STATE_KEY in state:  # resolved by the identity hook at the start of this request
        return state[_PRINCIPAL_STATE_KEY]
    return resolve(db, request.headers)


def require_principal(principal: Annotated[Principal | None, Depends(optional_principal)]) -> Principal:
    if principal is None:
        raise api_error(401, "unauthorized", "send 'Authorization: Bearer <token>' or 'X-Guest-Session: <token>'")
    return principal


DbDep = Annotated[Database, Depends(get_db)]
SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
PrincipalDep = Annotated[Principal, Depends(require_principal)]
OptionalPrincipalDep = Annotated[Principal | None, Depends(optional_principal)]
