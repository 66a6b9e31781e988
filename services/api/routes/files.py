"""Audio uploads (raw WAV body) and file metadata."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from instrumentation import operation, semconv, track
from services.api.dependencies import DbDep, PrincipalDep, SettingsDep
from services.api.errors import api_error
from services.api.uploads import store_upload
from services.store import catalog
from services.store.database import Database, NotFoundError

router = APIRouter(tags=["files"])


def file_body(record: catalog.FileRecord) -> dict[str, object]:
    return {
        "file_id": record.id,
        "project_id": record.project_id,
        "filename": record.filename,
        "size_bytes": record.size_bytes,
        "duration_s": record.duration_s,
        "sample_rate_hz": record.sample_rate_hz,
        "channels": record.channels,
    }


def owned_file(db: Database, file_id: str, user_id: str) -> catalog.FileRecord:
    try:
        return catalog.get_file(db.read(), file_id, user_id=user_id)
    except NotFoundError:
        raise api_error(404, "file_not_found", "no such file") from None


@router.post("/projects/{project_id}/files", status_code=201)
async def upload_file(
    project_id: str,
    request: Request,
    principal: PrincipalDep,
    db: DbDep,
    settings: SettingsDep,
    filename: Annotated[str, Query(min_length=1, max_length=255)] = "upload.wav",
) -> dict[str, object]:
    """Upload a WAV file as the raw request body (``Content-Type: audio/wav``)."""
    try:
        catalog.get_project(db.read(), project_id, user_id=principal.user_id)
    except NotFoundError:
        raise api_error(404, "project_not_found", "no such project") from None
    async with operation("file_upload", {semconv.PROJECT_ID: project_id}) as span:
        record = await store_upload(
            chunks=request.stream(),
            content_type=request.headers.get("content-type"),
            content_length=request.headers.get("content-length"),
            filename=filename,
            project_id=project_id,
            user_id=principal.user_id,
            db=db,
            settings=settings,
            span=span,
        )
        track(
            "file_uploaded",
            {
                semconv.FILE_ID: record.id,
                semconv.PROJECT_ID: project_id,
                semconv.FILE_SIZE: record.size_bytes,
                semconv.AUDIO_DURATION_S: record.duration_s,
                semconv.AUDIO_SAMPLE_RATE_HZ: record.sample_rate_hz,
                semconv.AUDIO_CHANNELS: record.channels,
            },
        )
    return file_body(record)


@router.get("/files/{file_id}")
def get_file(file_id: str, principal: PrincipalDep, db: DbDep) -> dict[str, object]:
    return file_body(owned_file(db, file_id, principal.user_id))
