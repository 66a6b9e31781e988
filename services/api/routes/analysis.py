"""Audio analysis: a job, and its result cached per file."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.api.dependencies import DbDep, PrincipalDep
from services.api.errors import api_error
from services.api.queueing import enqueue
from services.api.routes.files import owned_file
from services.api.routes.stems import owned_job
from services.store import jobs

router = APIRouter(tags=["analysis"])
KIND = "audio_analysis"


@router.post("/files/{file_id}/analysis", status_code=202)
def request_analysis(file_id: str, principal: PrincipalDep, db: DbDep) -> JSONResponse:
    """202 with a job; 200 with the result at once when the file was analysed before."""
    owned_file(db, file_id, principal.user_id)
    cached = jobs.cached_analysis(db.read(), file_id)
    if cached is not None:
        return JSONResponse({"file_id": file_id, "status": "completed", "cached": True, "result": cached})
    with db.transaction() as conn:
        job = enqueue(conn, kind=KIND, file_id=file_id, user_id=principal.user_id)
    return JSONResponse(job.public(), status_code=202)


@router.get("/files/{file_id}/analysis")
def get_analysis(file_id: str, principal: PrincipalDep, db: DbDep) -> dict[str, object]:
    owned_file(db, file_id, principal.user_id)
    cached = jobs.cached_analysis(db.read(), file_id)
    if cached is None:
        raise api_error(404, "not_analysed", "request an analysis first")
    return {"file_id": file_id, "status": "completed", "cached": True, "result": cached}


@router.get("/analysis/{job_id}")
def get_analysis_job(job_id: str, principal: PrincipalDep, db: DbDep) -> dict[str, object]:
    return owned_job(db, job_id, principal.user_id, KIND).public()
