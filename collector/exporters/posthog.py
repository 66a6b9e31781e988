"""PostHogExporter: one POST to PostHog's /batch/ per export, in the official wire format.

The body is the one ``posthog.request.batch_post`` sends (``{"batch": [...], "sent_at": ...,
"api_key": ...}``, gzip, ``Content-Type: application/json``, posthog-python's User-Agent, the
same URL), but built by joining bytes: an event claimed from the outbox carries its stored
compact JSON (``StoredEvent.payload``), which goes out as it is, never re-encoded. Other
events are encoded once with the outbox's encoder. gzip runs at a low level (``gzip_level``,
default 1: measured in docs/benchmarks.md) in one call to ISA-L (``isal``: the same gzip, about 12x
less CPU than zlib at level 1 on a 2,000-event batch); zlib's levels 1..9 map onto ISA-L's 1..3.

The request goes over this exporter's own requests session with no transport retries: a
retry is the delivery worker's decision. Our own instrumentation is suppressed around the
call, or the collector would trace its exports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from isal import isal_zlib
from opentelemetry.instrumentation.utils import suppress_http_instrumentation, suppress_instrumentation
from posthog.request import EVENTS_ENDPOINT, USER_AGENT, determine_server_host
from posthog.utils import remove_trailing_slash
from requests.adapters import HTTPAdapter

from collector.defaults import DEFAULT_POSTHOG_HOST
from collector.events import encode_event_bytes
from collector.exporters import ExportError, Rejected, RetryLater, TooLarge, Unauthorized

__all__ = ["PostHogExporter", "batch_body"]

DEFAULT_GZIP_LEVEL = 1
_DETAIL_CHARS = 300
_GZIP_WBITS = 16 + isal_zlib.MAX_WBITS  # a gzip member, as GzipFile writes


class PostHogExporter:
    def __init__(
        self,
        api_key: str,
        host: str | None = DEFAULT_POSTHOG_HOST,
        timeout_s: float = 10.0,
        *,
        gzip_level: int = DEFAULT_GZIP_LEVEL,
    ) -> None:
        if not api_key:
            raise ValueError("PostHogExporter needs an api_key")
        if not 1 <= gzip_level <= 9:
            raise ValueError(f"gzip_level must be 1..9, not {gzip_level}")
        self._api_key = api_key
        self.host = determine_server_host(host)
        self.url = remove_trailing_slash(self.host) + EVENTS_ENDPOINT
        self.timeout_s = timeout_s
        self.gzip_level = gzip_level
        self._isal_level = 1 if gzip_level == 1 else 2 if gzip_level <= 5 else 3
        self._headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "Content-Encoding": "gzip"}
        self._session = requests.Session()
        adapter = HTTPAdapter(max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)

    def export(self, batch: Sequence[Mapping[str, Any]]) -> None:
        body = batch_body(batch, api_key=self._api_key, sent_at=datetime.now(tz=UTC).isoformat())
        compressor = isal_zlib.compressobj(self._isal_level, isal_zlib.DEFLATED, _GZIP_WBITS)
        data = compressor.compress(body) + compressor.flush()
        with suppress_instrumentation(), suppress_http_instrumentation():
            try:
                response = self._session.post(self.url, data=data, headers=self._headers, timeout=self.timeout_s)
            except requests.RequestException as exc:
                raise RetryLater(f"network error: {type(exc).__name__}: {exc}") from exc
        try:
            if response.status_code != 200:
                raise classify(response.status_code, _detail(response), _retry_after_s(response))
        finally:
            response.close()

    def shutdown(self) -> None:
        self._session.close()


def batch_body(batch: Sequence[Mapping[str, Any]], *, api_key: str, sent_at: str) -> bytes:
    """The /batch/ body batch_post would send, with each event's stored JSON as it is.

    Same keys in the same order and the same separators as posthog-python's
    ``json.dumps(body)``; inside an event the stored compact JSON (valid JSON, UTF-8, no
    NaN or Infinity: see encode_event_bytes) is spliced in unchanged.
    """
    payloads = [encode_event_bytes(event) for event in batch]  # a claimed event's stored JSON as it is
    return b"".join(
        (
            b'{"batch": [',
            b", ".join(payloads),
            b'], "sent_at": ',
            json.dumps(sent_at).encode(),
            b', "api_key": ',
            json.dumps(api_key).encode(),
            b"}",
        )
    )


def _detail(response: requests.Response) -> str:
    """PostHog's ``detail`` when the answer is JSON with one, else the raw text (as batch_post)."""
    try:
        return str(response.json()["detail"])
    except (KeyError, TypeError, ValueError):
        return response.text


def _retry_after_s(response: requests.Response) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), as posthog-python reads it."""
    header = response.headers.get("Retry-After")
    if not header:
        return None
    try:
        return float(header)
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(header) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def classify(status: int | str, detail: str, retry_after_s: float | None) -> ExportError:
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
