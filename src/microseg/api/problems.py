"""RFC 9457 problem details: one handler table mapping errors to application/problem+json."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from microseg.errors import (
    ConfigError,
    ConflictError,
    DefinitionError,
    ImportFileError,
    MicrosegError,
    NotFoundError,
    PermissionDenied,
)

PROBLEM_TYPE = "https://microseg.dev/problems/"
MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("microseg.api")


class ApiProblem(Exception):
    """An HTTP-level problem raised by the API shell itself (auth, limits, malformed bodies)."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.slug, self.detail = status, slug, detail
        self.headers = headers or {}
        self.extra = extra


# The one table: domain error class -> (HTTP status, problem slug). Most specific first.
DOMAIN_ERRORS: tuple[tuple[type[MicrosegError], int, str], ...] = (
    (NotFoundError, 404, "not-found"),
    (ConflictError, 409, "conflict"),
    (PermissionDenied, 403, "forbidden"),
    (DefinitionError, 422, "invalid-definition"),
    (ImportFileError, 422, "unreadable-input"),
    (ConfigError, 400, "bad-configuration"),
    (MicrosegError, 400, "bad-request"),
)
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
HTTP_SLUGS = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized", 403: "forbidden"}


def problem(
    status: int,
    slug: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """An application/problem+json response."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + slug,
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extra)
    return Response(orjson.dumps(body, default=str), status, headers=headers, media_type=MEDIA_TYPE)


def status_of(exc: MicrosegError) -> tuple[int, str]:
    for cls, status, slug in DOMAIN_ERRORS:
        if isinstance(exc, cls):
            return status, slug
    return 400, "bad-request"


async def _domain(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MicrosegError)
    status, slug = status_of(exc)
    extra: dict[str, Any] = {}
    if isinstance(exc, DefinitionError):
        extra["problems"] = [
            {
                "message": p.message,
                "file": p.file,
                "line": p.line,
                "column": p.column,
                "path": p.path,
            }
            for p in exc.problems
        ]
    return problem(status, slug, str(exc), instance=request.url.path, **extra)


async def _api(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiProblem)
    return problem(
        exc.status,
        exc.slug,
        exc.detail,
        instance=request.url.path,
        headers=exc.headers,
        **exc.extra,
    )


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in errors)
    return problem(
        422,
        "validation-error",
        detail or "invalid request",
        instance=request.url.path,
        errors=errors,
    )


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    slug = HTTP_SLUGS.get(exc.status_code, "http-error")
    return problem(
        exc.status_code,
        slug,
        str(exc.detail),
        instance=request.url.path,
        headers=dict(exc.headers or {}),
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    # A bug, not a user mistake: log it with the traceback, tell the client nothing internal.
    log.error("unhandled error on %s", request.url.path, exc_info=exc)
    return problem(
        500,
        "internal-error",
        "unexpected server error; see the server log",
        instance=request.url.path,
    )


HANDLERS: dict[type[Exception], Callable[[Request, Exception], Any]] = {
    MicrosegError: _domain,
    ApiProblem: _api,
    RequestValidationError: _validation,
    StarletteHTTPException: _http,
    Exception: _unexpected,
}


def install(app: FastAPI) -> None:
    """Register the handler table on an app."""
    for exc_class, handler in HANDLERS.items():
        app.add_exception_handler(exc_class, handler)
