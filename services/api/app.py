"""create_app(): the Phonoglyph API with its routers, error shape and instrumentation."""

from __future__ import annotations

from fastapi import FastAPI

from instrumentation import instrument_fastapi
from services.api.dependencies import identity_hook
from services.api.errors import install_error_handlers
from services.api.routes import analysis, auth, credits, files, health, projects, renders, stems, users
from services.settings import ServiceSettings
from services.store.database import Database

ROUTERS = (health, auth, users, projects, files, stems, analysis, renders, credits)
EXCLUDED_URLS = "/health"


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings.from_env()
    db = Database(settings.db_path)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = FastAPI(title="Phonoglyph API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.db = db
    install_error_handlers(app)
    for module in ROUTERS:
        app.include_router(module.router)
    return instrument_fastapi(app, excluded_urls=EXCLUDED_URLS, identify_request=identity_hook(db))
