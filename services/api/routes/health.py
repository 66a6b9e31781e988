"""Liveness and readiness: the database answers. Excluded from tracing."""

from fastapi import APIRouter

from services.api.dependencies import DbDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health(db: DbDep) -> dict[str, str]:
    db.read().execute("SELECT 1").fetchone()
    return {"status": "ok"}
