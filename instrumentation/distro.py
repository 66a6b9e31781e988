"""``opentelemetry-instrument`` entry points: an app with no instrumentation code gets our pipeline.

    OTEL_PYTHON_DISTRO=phonoglyph OTEL_PYTHON_CONFIGURATOR=phonoglyph \\
        opentelemetry-instrument uvicorn app:app

``PhonoglyphDistro`` sets the OTEL_* defaults and replaces the stock FastAPI instrumentor by
``instrument_fastapi`` (one lean server span per request) for every FastAPI app created;
``PhonoglyphConfigurator`` calls ``instrumentation.configure()``.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]  # mypy misses it
from opentelemetry.sdk._configuration import _BaseConfigurator
from opentelemetry.util._importlib_metadata import EntryPoint

from instrumentation._internal import config
from instrumentation._internal.fastapi import instrument_every_fastapi_app
from instrumentation._internal.setup import configure

OTEL_DEFAULTS = {
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_LOGS_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_TRACES_SAMPLER": "parentbased_always_on",
}


class PhonoglyphDistro(BaseDistro):
    """The distro: OTEL_* defaults, and our FastAPI instrumentation instead of the stock one."""

    def _configure(self, **kwargs: Any) -> None:
        for name, value in OTEL_DEFAULTS.items():
            os.environ.setdefault(name, value)

    def load_instrumentor(self, entry_point: EntryPoint, **kwargs: Any) -> None:
        if entry_point.name == "fastapi":
            instrument_every_fastapi_app(excluded_urls=config.read(config.FASTAPI_EXCLUDED_URLS))
            return
        super().load_instrumentor(entry_point, **kwargs)


class PhonoglyphConfigurator(_BaseConfigurator):
    """The configurator: the same ``configure()`` an application would call, from the environment."""

    def _configure(self, **kwargs: Any) -> None:
        configure()
