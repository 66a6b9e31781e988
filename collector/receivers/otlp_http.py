"""OTLP/HTTP 1.x receiver as a raw ASGI endpoint: ``POST /v1/traces``, ``/v1/logs``, ``/v1/metrics``.

It reads the body, decodes it (``collector.codecs.otlp``), hands ``(signal, request, raw_body)`` to its
consumer and encodes the answer; it never maps, stores or exports (docs/architecture.md "Collector HTTP").

Statuses: 200 only after the consumer returned (the derived events are committed), with
``partial_success`` for items that cannot be decoded or mapped (an item that does not decode is left out
alone, the rest of the request goes on); 400 when the request itself cannot be decoded; 401 bad or missing bearer token
(constant-time compare); 408 body not received within ``body_timeout_s``; 413 over the compressed or the
decompressed limit; 415 unknown content type or encoding; 429 too many requests in flight, or the
consumer's backpressure, and 503 its storage trouble, both with ``Retry-After``. Answers are in the
request's encoding (``google.rpc.Status`` on errors).

The event loop only reads bodies; inflating, decoding and the consumer run on a small thread pool so a
commit never stalls other connections.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from collector.asgi import NOT_FOUND, Receive, Response, Scope, Send, method_not_allowed, send_response
from collector.codecs.otlp import (
    JSON,
    PROTOBUF,
    SIGNALS,
    CodecError,
    Signal,
    decode,
    encode_response,
    gunzip,
    status_body,
)
from collector.metrics import Metrics
from collector.pipeline import Consumer, RetryableError

__all__ = ["OtlpHttpReceiver", "ReceiverLimits"]

logger = logging.getLogger(__name__)

_METHODS = ("POST",)


class ReceiverLimits(Protocol):
    """The limits a receiver enforces (``collector.config.LimitsConfig`` has them)."""

    @property
    def max_request_bytes(self) -> int: ...
    @property
    def max_decompressed_bytes(self) -> int: ...
    @property
    def max_inflight_requests(self) -> int: ...
    @property
    def retry_after_s(self) -> int: ...
    @property
    def body_timeout_s(self) -> int: ...


class _Refused(Exception):
    def __init__(self, status: int, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


class OtlpHttpReceiver:
    """ASGI endpoint; ``consumer`` takes each decoded request (``collector.pipeline.Consumer``)."""

    paths = frozenset(SIGNALS)

    def __init__(
        self,
        consumer: Consumer,
        *,
        metrics: Metrics,
        limits: ReceiverLimits,
        auth_token: str | None = None,
        worker_threads: int = 2,
    ) -> None:
        self._consumer = consumer
        self._metrics = metrics
        self._limits = limits
        self._expected_authorization = f"Bearer {auth_token}".encode() if auth_token else None
        self._executor = ThreadPoolExecutor(max_workers=worker_threads, thread_name_prefix="otlp-receiver")
        self._inflight = 0

    def shutdown(self) -> None:
        """Wait for the requests being processed; no request is taken afterwards."""
        self._executor.shutdown(wait=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        signal = SIGNALS.get(scope["path"])
        if signal is None:
            response = NOT_FOUND
        elif scope["method"] != "POST":
            response = method_not_allowed(_METHODS)
        else:
            response = await self._export(signal, scope, receive)
        await send_response(send, response)

    async def _export(self, signal: Signal, scope: Scope, receive: Receive) -> Response:
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        is_json = content_type == JSON.encode()
        self._inflight += 1
        try:
            if self._expected_authorization is not None and not hmac.compare_digest(
                headers.get(b"authorization", b""), self._expected_authorization
            ):
                raise _Refused(401, "missing or wrong bearer token")
            if not is_json and content_type != PROTOBUF.encode():
                raise _Refused(415, f"content-type must be {PROTOBUF} or {JSON}")
            encoding = headers.get(b"content-encoding", b"identity").strip().lower()
            if encoding not in (b"gzip", b"identity", b""):
                raise _Refused(415, "content-encoding must be gzip or none")
            if self._inflight > self._limits.max_inflight_requests:
                raise _Refused(429, "too many requests in flight", retry_after_s=self._limits.retry_after_s)
            body = await self._read_body(headers, receive)
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._process, signal, body, encoding == b"gzip", is_json
            )
        except _Refused as exc:
            return self._error(exc, is_json=is_json)
        finally:
            self._inflight -= 1

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        limit = self._limits.max_request_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _Refused(413, f"body over {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        timeout_s = self._limits.body_timeout_s
        try:
            async with asyncio.timeout(timeout_s):  # one deadline for the whole body: a trickle cannot hold a slot
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _Refused(400, "client disconnected")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise _Refused(413, f"body over {limit} bytes")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise _Refused(408, f"body not received within {timeout_s} s") from None

    def _process(self, signal: Signal, body: bytes, gzipped: bool, is_json: bool) -> Response:
        """On the receiver's pool: inflate, decode, consume, encode the answer."""
        try:
            if gzipped:
                body = gunzip(body, self._limits.max_decompressed_bytes)
            elif len(body) > self._limits.max_decompressed_bytes:
                raise _Refused(413, f"body over {self._limits.max_decompressed_bytes} bytes")
            decoded = decode(signal, body, is_json=is_json)
            if decoded.rejected:
                self._metrics.inc("dropped_items_total", decoded.rejected, reason="undecodable")
            result = self._consumer.consume(signal.name, decoded.request, decoded.raw_body)
        except _Refused as exc:
            return self._error(exc, is_json=is_json)
        except CodecError as exc:
            return self._error(_Refused(exc.status, exc.message), is_json=is_json)
        except RetryableError as exc:
            return self._error(_Refused(exc.status, exc.message, retry_after_s=exc.retry_after_s), is_json=is_json)
        except Exception:  # a bug, not a transient condition: log it and say so
            logger.exception("receiver failed on a %s request", signal.name)
            return self._error(_Refused(500, "internal error"), is_json=is_json)
        rejected = decoded.rejected + result.rejected
        error_message = "; ".join(message for message in (decoded.error_message, result.error_message) if message)
        body = encode_response(signal, rejected=rejected, error_message=error_message, is_json=is_json)
        return Response(200, body, JSON if is_json else PROTOBUF)

    def _error(self, exc: _Refused, *, is_json: bool) -> Response:
        self._metrics.inc("rejected_requests_total", status=str(exc.status))
        headers: tuple[tuple[bytes, bytes], ...] = ()
        if exc.retry_after_s is not None:
            headers = ((b"retry-after", str(exc.retry_after_s).encode()),)
        return Response(
            exc.status, status_body(exc.status, exc.message, is_json=is_json), JSON if is_json else PROTOBUF, headers
        )
