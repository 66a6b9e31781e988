"""PostHogExporter: one POST to PostHog's /batch/ per export, in the official wire format.

The request is made by ``posthog.request.batch_post`` (body ``{"batch": [...], "api_key",
"sent_at"}``, gzip, posthog-python's User-Agent) over this exporter's own requests session
with no transport retries: a retry is the delivery worker's decision. Our own
instrumentation is suppressed around the call, or the collector would trace its exports.
"""

from __future__ import annotations

import requests
from opentelemetry.instrumentation.utils import suppress_http_instrumentation, suppress_instrumentation
from posthog.request import APIError, batch_post, determine_server_host
from requests.adapters import HTTPAdapter

from collector.exporters import Rejected, RetryLater, TooLarge, Unauthorized

__all__ = ["PostHogExporter"]

DEFAULT_HOST = "https://us.i.posthog.com"
_DETAIL_CHARS = 300


class PostHogExporter:
    def __init__(self, api_key: str, host: str | None = DEFAULT_HOST, timeout_s: float = 10.0) -> None:
        if not api_key:
            raise ValueError("PostHogExporter needs an api_key")
        self._api_key = api_key
        self.host = determine_server_host(host)
        self.timeout_s = timeout_s
        self._session = requests.Session()
        adapter = HTTPAdapter(max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)

    def export(self, batch: list[dict]) -> None:
        with suppress_instrumentation(), suppress_http_instrumentation():
            try:
                batch_post(
                    self._api_key,
                    host=self.host,
                    gzip=True,
                    timeout=self.timeout_s,
                    session=self._session,
                    batch=batch,
                )
            except APIError as exc:
                raise classify(exc.status, str(exc.message), exc.retry_after) from exc
            except requests.RequestException as exc:
                raise RetryLater(f"network error: {type(exc).__name__}: {exc}") from exc

    def shutdown(self) -> None:
        self._session.close()


def classify(status: int | str, detail: str, retry_after_s: float | None):
    """The ExportError for a non-200 answer from /batch/."""
    message = f"HTTP {status}: {detail[:_DETAIL_CHARS]}"
    if status == 400:
        return Rejected(message)
    if status == 413:
        return TooLarge(message)
    if status in (401, 403):
        return Unauthorized(message)
    # 408, 429, 5xx, and anything unexpected (a proxy's 404, a redirect): keep the events.
    return RetryLater(message, retry_after_s=retry_after_s)
