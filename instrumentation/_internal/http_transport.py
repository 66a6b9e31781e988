"""The OTLP exporters' HTTP transport: one kept-alive ``http.client`` connection per exporter.

The SDK's transport is a ``requests`` session: about 0.6 ms of CPU per export request, holding the
GIL in many short stretches the request threads then wait behind; ``http.client`` costs about 0.1 ms
for the same request (docs/benchmarks.md). It is used where it sends what ``requests`` would: a plain
session (no auth, adapters or proxies of its own) and no proxy from the environment for the endpoint;
otherwise the exporter keeps the SDK's transport. TLS settings are those ``requests`` would use: the
session's CA bundle (or the environment's, or certifi's) and client certificate.
"""

from __future__ import annotations

import http.client
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.exporter.http.transport._base import BaseHTTPResult, BaseHTTPTransport


@dataclass(frozen=True, slots=True)
class HttpClientResult(BaseHTTPResult):
    body: bytes = b""
    response_headers: Mapping[str, str] | http.client.HTTPMessage = field(default_factory=dict)

    def content(self) -> bytes:
        return self.body

    def headers(self) -> Mapping[str, str]:
        return self.response_headers  # type: ignore[return-value]  # an HTTPMessage: a case-insensitive get


class HttpClientTransport(BaseHTTPTransport):
    """POSTs over one kept-alive connection (a new one after any failure); thread-safe."""

    def __init__(
        self,
        *,
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
    ) -> None:
        self._verify = verify
        self._cert = cert
        self._ssl_context: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._connection: http.client.HTTPConnection | None = None
        self._origin: tuple[str, str, int | None] | None = None

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        data: bytes | None = None,
    ) -> BaseHTTPResult:
        with self._lock:
            try:
                connection, target = self._connect(url, timeout)
                connection.request(method, target, body=data, headers=headers or {})
                response = connection.getresponse()
                body = response.read()
            except Exception as error:
                self._close()
                return HttpClientResult(error=error)
            if response.will_close:
                self._close()
            return HttpClientResult(
                status_code=response.status, reason=response.reason, body=body, response_headers=response.headers
            )

    def _connect(self, url: str, timeout: float | None) -> tuple[http.client.HTTPConnection, str]:
        parts = urlsplit(url)
        origin = (parts.scheme, parts.hostname or "", parts.port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection = self._connection
        if connection is None or origin != self._origin:
            self._close()
            if parts.scheme == "https":
                connection = http.client.HTTPSConnection(
                    origin[1], origin[2], timeout=timeout, context=self._tls_context()
                )
            elif parts.scheme == "http":
                connection = http.client.HTTPConnection(origin[1], origin[2], timeout=timeout)
            else:
                raise ValueError(f"unsupported URL scheme for OTLP/HTTP: {parts.scheme!r}")
            self._connection, self._origin = connection, origin
        elif connection.sock is not None:
            connection.sock.settimeout(timeout)
        connection.timeout = timeout
        return connection, target

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            if self._verify is False:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            else:
                context = ssl.create_default_context(cafile=None if self._verify is True else self._verify)
            if isinstance(self._cert, tuple):
                context.load_cert_chain(self._cert[0], self._cert[1])
            elif self._cert:
                context.load_cert_chain(self._cert)
            self._ssl_context = context
        return self._ssl_context

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = None

    def is_connection_error(self, exception: Exception | None) -> bool:
        """A failure before a response: refused, reset, timed out, TLS, or a kept-alive connection the
        server had closed (the client then makes its one immediate new attempt)."""
        return isinstance(exception, (OSError, http.client.HTTPException))

    def close(self) -> None:
        with self._lock:
            self._close()


def transport_for(
    url: str, *, verify: bool | str = True, cert: str | tuple[str, str] | None = None
) -> BaseHTTPTransport:
    """What a new ``requests`` session would send ``url`` through: the SDK's ``requests`` transport when a
    proxy from the environment applies, else an :class:`HttpClientTransport` with the same TLS settings."""
    import requests
    from opentelemetry.exporter.http.transport._requests import RequestsHTTPTransport

    session = requests.Session()
    return _lighter(url, session, verify, cert) or RequestsHTTPTransport(verify=verify, cert=cert, session=session)


def lighter_transport(exporter: Any) -> None:
    """Give an SDK OTLP/HTTP exporter an :class:`HttpClientTransport` in place of its plain ``requests``
    session (the same TLS settings); a session of the caller's own (auth, adapters, proxies, headers)
    or a proxy from the environment keeps it."""
    import requests
    from opentelemetry.exporter.http.transport._requests import RequestsHTTPTransport

    client = exporter._client
    transport = client._transport
    if type(transport) is not RequestsHTTPTransport:
        return
    session = transport._session
    if (
        type(session) is not requests.Session
        or session.auth is not None
        or session.proxies
        or session.headers != requests.utils.default_headers()
        or set(session.adapters) != {"https://", "http://"}
    ):
        return
    lighter = _lighter(client._endpoint, session, session.verify, session.cert)
    if lighter is not None:
        client._transport = lighter
        transport.close()


def _lighter(url: str, session: Any, verify: bool | str, cert: Any) -> HttpClientTransport | None:
    """An :class:`HttpClientTransport` with the TLS settings ``session`` would use for ``url`` (the
    environment's ``REQUESTS_CA_BUNDLE``... as ``requests`` reads them), or None when it would use a proxy."""
    import requests

    settings = session.merge_environment_settings(url, {}, None, verify, cert)
    if requests.utils.select_proxy(url, settings["proxies"]):
        return None
    verify = settings["verify"]
    return HttpClientTransport(verify=requests.certs.where() if verify is True else verify, cert=settings["cert"])
