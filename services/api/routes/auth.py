"""Sign-up, guest sessions and API tokens.

A guest who signs up keeps the guest's user id and session id (the user row is upgraded in place),
so analytics sees one person before and after sign-up; the guest token is revoked then. Tokens expire
(``api_token_ttl_s``, ``guest_token_ttl_s``) and ``DELETE /auth/tokens/current`` revokes the one used.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from instrumentation import identify, semconv, track
from services.api.dependencies import DbDep, OptionalPrincipalDep, PrincipalDep, SettingsDep, credentials_of
from services.api.errors import api_error
from services.store import accounts
from services.store.database import new_id

router = APIRouter(prefix="/auth", tags=["auth"])


class SignUp(BaseModel):
    email: Annotated[str, Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
    name: Annotated[str | None, Field(max_length=200)] = None


@router.post("/guest", status_code=201)
def start_guest_session(db: DbDep, settings: SettingsDep) -> dict[str, object]:
    session_id = new_id("s")
    with db.transaction() as conn:
        user_id = accounts.create_user(conn, email=None, name=None, guest=True, credits=settings.guest_credits)
        token = accounts.issue_credential(
            conn, user_id=user_id, session_id=session_id, kind="guest_session", ttl_s=settings.guest_token_ttl_s
        )
    identify(user_id=user_id, session_id=session_id, guest=True)
    return {"user_id": user_id, "session_id": session_id, "guest_token": token, "credits": settings.guest_credits}


def _already_signed_up() -> Exception:
    return api_error(409, "already_signed_up", "this credential already belongs to a signed-up user")


@router.post("/signup", status_code=201)
def sign_up(
    body: SignUp, request: Request, db: DbDep, settings: SettingsDep, principal: OptionalPrincipalDep
) -> dict[str, object]:
    if principal is None:
        credentials = credentials_of(request.headers)
        if credentials is not None:  # a credential that no longer works never silently makes a new account
            if credentials[0] == "guest_session" and accounts.was_converted_guest(db.read(), credentials[1]):
                raise _already_signed_up()
            raise api_error(401, "unauthorized", "the credential is unknown, expired or revoked")
    elif not principal.guest:
        raise _already_signed_up()
    try:
        with db.transaction() as conn:
            if principal is not None:  # the guest becomes a member: same user id, same session
                user_id, session_id = principal.user_id, principal.session_id
                accounts.upgrade_guest(conn, user_id, email=body.email, name=body.name, credits=settings.signup_credits)
            else:
                session_id = new_id("s")
                user_id = accounts.create_user(
                    conn, email=body.email, name=body.name, guest=False, credits=settings.signup_credits
                )
            token = accounts.issue_credential(
                conn, user_id=user_id, session_id=session_id, kind="api_token", ttl_s=settings.api_token_ttl_s
            )
            credits = int(accounts.get_user(conn, user_id)["credits"])
    except accounts.EmailTakenError:
        raise api_error(409, "email_taken", "an account with this e-mail address exists") from None
    except accounts.AlreadySignedUpError:  # a concurrent sign-up of this guest won
        raise _already_signed_up() from None
    identify(user_id=user_id, session_id=session_id, guest=False)
    track("user_signed_up", {"from_guest": principal is not None, semconv.USER_GUEST: False})
    return {"user_id": user_id, "session_id": session_id, "token": token, "credits": credits}


@router.post("/tokens", status_code=201)
def create_api_token(principal: PrincipalDep, db: DbDep, settings: SettingsDep) -> dict[str, str]:
    if principal.guest:
        raise api_error(403, "guest_not_allowed", "sign up to create API tokens")
    with db.transaction() as conn:
        token = accounts.issue_credential(
            conn, user_id=principal.user_id, session_id=new_id("s"), kind="api_token", ttl_s=settings.api_token_ttl_s
        )
    return {"token": token}


@router.delete("/tokens/current", status_code=204)
def revoke_current_token(principal: PrincipalDep, db: DbDep) -> Response:
    """Revoke the credential this request was made with (an API token or a guest session token)."""
    with db.transaction() as conn:
        accounts.revoke_credential(conn, principal.credential)
    return Response(status_code=204)
