"""Projects: a user's containers for uploaded audio."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field

from instrumentation import semconv, track
from services.api.dependencies import DbDep, PrincipalDep
from services.api.errors import api_error
from services.store import catalog
from services.store.database import NotFoundError

router = APIRouter(prefix="/projects", tags=["projects"])


class NewProject(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=200)]


@router.post("", status_code=201)
def create_project(body: NewProject, principal: PrincipalDep, db: DbDep) -> dict[str, str]:
    with db.transaction() as conn:
        project_id = catalog.create_project(conn, user_id=principal.user_id, name=body.name)
    track("project_created", {semconv.PROJECT_ID: project_id})
    return {"project_id": project_id, "name": body.name}


@router.get("")
def list_projects(principal: PrincipalDep, db: DbDep) -> dict[str, list[dict[str, str]]]:
    rows = catalog.list_projects(db.read(), user_id=principal.user_id)
    return {"projects": [{"project_id": row["id"], "name": row["name"]} for row in rows]}


@router.get("/{project_id}")
def get_project(project_id: str, principal: PrincipalDep, db: DbDep) -> dict[str, object]:
    conn = db.read()
    try:
        row = catalog.get_project(conn, project_id, user_id=principal.user_id)
    except NotFoundError:
        raise api_error(404, "project_not_found", "no such project") from None
    files = catalog.list_files(conn, project_id=project_id)
    return {
        "project_id": row["id"],
        "name": row["name"],
        "files": [{"file_id": f.id, "filename": f.filename, "duration_s": f.duration_s} for f in files],
    }
