"""create_app(): the Phonoglyph API with its routers, error shape and instrumentation."""

from __future__ import annotations

import logging

from fastapi import Depends, FastAPI

from instrumentation import instrument_fastapi
from services.api.dependencies import identity_hook
from services.api.errors import install_error_handlers
from services.api.faults import http_fault
from services.api.routes import analysis, auth, credits, files, health, projects, renders, stems, users
from services.settings import ServiceSettings
from services.store.database import Database
from services.store.metrics import JobQueueGauges

ROUTERS = (health, auth, users, projects, files, stems, analysis, renders, credits)
EXCLUDED_URLS = "/health"


def create_app(settings: ServiceSettings | None = None, *, observe_job_queue: bool = True) -> FastAPI:
    """The app; ``observe_job_queue``: register the job-queue gauges (``services.store.metrics``) on the
    global meter, the api being the process that outlives a dead worker."""
    settings = settings or ServiceSettings.from_env()
    db = Database(settings.db_path, busy_timeout_s=settings.db_busy_timeout_s)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    dependencies = [Depends(http_fault(settings.faults))] if settings.faults.http_5xx_rate else []
    if settings.faults.any_on:
        logging.getLogger("services.api").warning("fault switches on (README, Fault switches): %s", settings.faults)
    app = FastAPI(title="Phonoglyph API", docs_url=None, redoc_url=None, openapi_url=None, dependencies=dependencies)
    app.state.settings = settings
    app.state.db = db
    if observe_job_queue:
        app.state.job_queue_gauges = JobQueueGauges(db)
    install_error_handlers(app)
    for module in ROUTERS:
        app.include_router(module.router)
    return instrument_fastapi(app, excluded_urls=EXCLUDED_URLS, identify_request=identity_hook(db))
