"""The caller's own account."""

from fastapi import APIRouter

from services.api.dependencies import DbDep, PrincipalDep
from services.store import accounts

router = APIRouter(prefix="/users", tags=["users"])


@router.get("/me")
def me(principal: PrincipalDep, db: DbDep) -> dict[str, object]:
    user = accounts.get_user(db.read(), principal.user_id)
    return {
        "user_id": user["id"],
        "email": user["email"],
        "name": user["name"],
        "guest": bool(user["guest"]),
        "credits": user["credits"],
        "session_id": principal.session_id,
    }
