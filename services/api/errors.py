"""API errors: one JSON shape, ``{"error": {"code": "...", "message": "..."}}``, for every error answer.

Each error code has its own exception class, named by the code: an ``ApiError`` raised inside
``operation(...)`` then fails the operation with ``error.type`` = the code (the instrumentation
reports the exception's class name), which is what analytics and alerts group by.

A 4xx is the caller's mistake: answered here, never reported. A 5xx is a server-side failure: its
exception (an ``ApiError`` of status >= 500, an ``HTTPException`` of 500 or more, any unexpected
error) is answered in the same JSON shape by Starlette's outermost error middleware, which then
re-raises it, so it leaves the app and the instrumentation's server-span layer reports it (Sentry,
with the request's trace, route and request data; the server span gets ``error.type``).
"""

from __future__ import annotations

from functools import cache

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

INTERNAL_ERROR = "internal_error"

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "file_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """An expected failure answered with ``status_code`` and a machine-readable ``code``."""

    status_code: int = 400
    code: str = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


@cache
def _error_class(status_code: int, code: str) -> type[ApiError]:
    return type(code, (ApiError,), {"status_code": status_code, "code": code, "__qualname__": code})


def api_error(status_code: int, code: str, message: str) -> ApiError:
    """The ApiError for ``code`` (its class is named ``code``), ready to raise."""
    return _error_class(status_code, code)(message)


def error_response(status_code: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        if exc.status_code >= 500:
            raise exc  # a server-side failure: on to _server_error, then out of the app (reported)
        return JSONResponse(exc.body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = ", ".join(".".join(str(part) for part in error["loc"]) for error in exc.errors())
        return error_response(422, "invalid_request", f"invalid or missing: {fields}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code >= 500:
            raise exc
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)  # Starlette's ServerErrorMiddleware: answers, then re-raises
    async def _server_error(_request: Request, exc: Exception) -> JSONResponse:
        return server_error_response(exc)


def server_error_response(exc: Exception) -> JSONResponse:
    """The answer to a server-side failure: the error's own status and code, else 500 ``internal_error``
    (an unexpected exception's message stays in the report, never in the answer)."""
    if isinstance(exc, ApiError) and exc.status_code >= 500:
        return JSONResponse(exc.body(), status_code=exc.status_code)
    if isinstance(exc, StarletteHTTPException) and exc.status_code >= 500:
        return error_response(exc.status_code, "http_error", str(exc.detail), headers=getattr(exc, "headers", None))
    return error_response(500, INTERNAL_ERROR, "an unexpected error; it has been reported")
