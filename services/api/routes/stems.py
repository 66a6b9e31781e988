"""Stem separation jobs: create, status, list, and download a stem."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from services.api.dependencies import DbDep, PrincipalDep
from services.api.errors import api_error
from services.api.queueing import enqueue
from services.api.routes.files import owned_file
from services.audio import STEM_NAMES
from services.store import jobs
from services.store.database import Database, NotFoundError

router = APIRouter(tags=["stems"])
KIND = "stem_separation"


def owned_job(db: Database, job_id: str, user_id: str, kind: str) -> jobs.Job:
    try:
        return jobs.get_job(db.read(), job_id, user_id=user_id, kind=kind)
    except NotFoundError:
        raise api_error(404, "job_not_found", "no such job") from None


@router.post("/files/{file_id}/stems", status_code=202)
def create_stem_job(file_id: str, principal: PrincipalDep, db: DbDep) -> dict[str, object]:
    owned_file(db, file_id, principal.user_id)
    with db.transaction() as conn:
        job = enqueue(conn, kind=KIND, file_id=file_id, user_id=principal.user_id)
    return job.public()


@router.get("/files/{file_id}/stems")
def list_stem_jobs(file_id: str, principal: PrincipalDep, db: DbDep) -> dict[str, list[dict[str, object]]]:
    owned_file(db, file_id, principal.user_id)
    return {"jobs": [job.public() for job in jobs.list_jobs(db.read(), file_id=file_id, kind=KIND)]}


@router.get("/stems/{job_id}")
def get_stem_job(job_id: str, principal: PrincipalDep, db: DbDep) -> dict[str, object]:
    return owned_job(db, job_id, principal.user_id, KIND).public()


@router.get("/stems/{job_id}/{stem}.wav")
def download_stem(job_id: str, stem: str, principal: PrincipalDep, db: DbDep) -> FileResponse:
    job = owned_job(db, job_id, principal.user_id, KIND)
    if stem not in STEM_NAMES:
        raise api_error(404, "stem_not_found", f"stems are {', '.join(STEM_NAMES)}")
    if job.status != "completed" or job.result is None:
        raise api_error(409, "job_not_completed", f"the job is {job.status}")
    return FileResponse(job.result["stems"][stem]["path"], media_type="audio/wav", filename=f"{stem}.wav")
