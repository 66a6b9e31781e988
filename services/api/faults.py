"""The api's fault switch for the detection benchmark: a share of one route family answers 500.

``PHONOGLYPH_FAULT_HTTP_5XX_RATE`` (0..1, off by default) and ``PHONOGLYPH_FAULT_HTTP_5XX_ROUTE`` (a
path prefix). An app-level dependency: it runs after routing (the server span has ``http.route``)
and fails through the ordinary server-error path (answered 500 ``fault_injected``, reported).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from fastapi import Request

from services.api.errors import api_error
from services.settings import FaultSettings

FAULT_INJECTED = "fault_injected"


def http_fault(faults: FaultSettings) -> Callable[[Request], None]:
    rate, prefix = faults.http_5xx_rate, faults.http_5xx_route

    def inject_http_fault(request: Request) -> None:
        if request.url.path.startswith(prefix) and random.random() < rate:
            raise api_error(500, FAULT_INJECTED, f"injected failure (PHONOGLYPH_FAULT_HTTP_5XX_RATE={rate})")

    return inject_http_fault
