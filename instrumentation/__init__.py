"""Phonoglyph's instrumentation: OpenTelemetry set up once, with a small vendor-neutral API.

Services import only this package and the OpenTelemetry API. See README "Instrumentation".

The names below are imported on first use (PEP 562), so ``import instrumentation.semconv`` or
``import instrumentation.scrubbing`` (the collector does) does not load the OpenTelemetry SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from instrumentation._internal.events import track
    from instrumentation._internal.fastapi import instrument_fastapi
    from instrumentation._internal.identity import Identity, identify
    from instrumentation._internal.operations import OperationAbandoned, operation
    from instrumentation._internal.setup import configure, shutdown
    from instrumentation.scrubbing import ScrubbingConfig

__all__ = [
    "Identity",
    "OperationAbandoned",
    "ScrubbingConfig",
    "configure",
    "identify",
    "instrument_fastapi",
    "operation",
    "shutdown",
    "track",
]

_MODULES = {
    "Identity": "instrumentation._internal.identity",
    "OperationAbandoned": "instrumentation._internal.operations",
    "ScrubbingConfig": "instrumentation.scrubbing",
    "configure": "instrumentation._internal.setup",
    "identify": "instrumentation._internal.identity",
    "instrument_fastapi": "instrumentation._internal.fastapi",
    "operation": "instrumentation._internal.operations",
    "shutdown": "instrumentation._internal.setup",
    "track": "instrumentation._internal.events",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
