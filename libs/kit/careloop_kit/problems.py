"""RFC 9457 problem details: typed business errors mapped once to HTTP."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://careloop.dev/problems/"

log = logging.getLogger(__name__)


class ProblemError(Exception):
    """A business error that carries its HTTP status; subclass per kind."""

    status: int = 400
    title: str = "Bad request"
    slug: str = "bad-request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(ProblemError):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(ProblemError):
    status, title, slug = 409, "Conflict", "conflict"


class Forbidden(ProblemError):
    status, title, slug = 403, "Forbidden", "forbidden"


class Unauthorized(ProblemError):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class DependencyUnavailable(ProblemError):
    """A database, broker or Vault is unreachable: refuse work rather than half-do it."""

    status, title, slug = 503, "Service unavailable", "dependency-unavailable"


def problem_response(
    status: int, title: str, slug: str, detail: str, instance: str, **extra: Any
) -> JSONResponse:
    """Build a problem+json response."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        **extra,
    }
    headers = {"Retry-After": "5"} if status == 503 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    """Map every error an app can raise to problem+json; never a bare 500 page."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return problem_response(
            exc.status, exc.title, exc.slug, exc.detail, request.url.path, **exc.extra
        )

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ())),
                "message": err.get("msg", ""),
                "type": err.get("type", ""),
            }
            for err in exc.errors()
        ]
        return problem_response(
            422,
            "Invalid request",
            "validation-error",
            "The request has invalid fields; see `errors` and correct them.",
            request.url.path,
            errors=errors,
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return problem_response(
            exc.status_code,
            str(exc.detail) if exc.status_code < 500 else "Server error",
            f"http-{exc.status_code}",
            str(exc.detail),
            request.url.path,
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return problem_response(
            500,
            "Internal error",
            "internal-error",
            "An unexpected error occurred; it has been logged. Retry, and report the request id.",
            request.url.path,
        )

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
