"""Phonoglyph's instrumentation: OpenTelemetry set up once, with a small vendor-neutral API.

Services import only this package and the OpenTelemetry API. See README "Instrumentation".
"""

from __future__ import annotations

from instrumentation._internal.events import track
from instrumentation._internal.fastapi import instrument_fastapi
from instrumentation._internal.identity import Identity, identify
from instrumentation._internal.operations import operation
from instrumentation._internal.scrubbing import ScrubbingConfig
from instrumentation._internal.setup import configure, shutdown

__all__ = [
    "Identity",
    "ScrubbingConfig",
    "configure",
    "identify",
    "instrument_fastapi",
    "operation",
    "shutdown",
    "track",
]
