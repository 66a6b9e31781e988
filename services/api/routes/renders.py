"""Renders: start one (spends credits; 402 without enough), status, download the PNG."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from instrumentation import operation, semconv, track
from services.api.dependencies import DbDep, PrincipalDep, SettingsDep
from services.api.errors import api_error
from services.api.queueing import enqueue
from services.api.routes.files import owned_file
from services.api.routes.stems import owned_job
from services.store import accounts

router = APIRouter(tags=["render"])
KIND = "render"


@router.post("/files/{file_id}/renders", status_code=202)
def start_render(file_id: str, principal: PrincipalDep, db: DbDep, settings: SettingsDep) -> dict[str, object]:
    record = owned_file(db, file_id, principal.user_id)
    cost = settings.render_cost_credits
    try:
        with db.transaction() as conn:
            balance = accounts.spend_credits(conn, principal.user_id, cost)
            job = enqueue(conn, kind=KIND, file_id=file_id, user_id=principal.user_id, credits_spent=cost)
            # emitted before the commit makes the job claimable: always ahead of the worker's records
            track(
                "render_started",
                {
                    semconv.RENDER_ID: job.id,
                    semconv.JOB_ID: job.id,
                    semconv.FILE_ID: file_id,
                    semconv.PROJECT_ID: record.project_id,
                    semconv.CREDITS_SPENT: cost,
                },
            )
    except accounts.InsufficientCreditsError as exc:
        attributes = {semconv.FILE_ID: file_id, semconv.PROJECT_ID: record.project_id}
        # a render refused for credits is a failed render that never started: render_failed alone
        with operation("render", attributes, started_event=False):
            raise api_error(402, "insufficient_credits", str(exc)) from None
    body = job.public()
    body.update(render_id=job.id, credits_spent=cost, credits_balance=balance)
    return body


@router.get("/renders/{render_id}")
def get_render(render_id: str, principal: PrincipalDep, db: DbDep) -> dict[str, object]:
    job = owned_job(db, render_id, principal.user_id, KIND)
    return {**job.public(), "render_id": job.id}


@router.get("/renders/{render_id}/image")
def download_render(render_id: str, principal: PrincipalDep, db: DbDep) -> FileResponse:
    job = owned_job(db, render_id, principal.user_id, KIND)
    if job.status != "completed" or job.result is None:
        raise api_error(409, "render_not_ready", f"the render is {job.status}")
    return FileResponse(job.result["image_path"], media_type="image/png", filename=f"{render_id}.png")
