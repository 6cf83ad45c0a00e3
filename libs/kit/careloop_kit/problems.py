"""RFC 9457 problem details: typed business errors mapped once to HTTP."""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from careloop_kit.errors import (
    Conflict,
    DependencyUnavailable,
    Forbidden,
    NotFound,
    ProblemError,
    Unauthorized,
)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://careloop.dev/problems/"

log = logging.getLogger(__name__)

VALIDATION_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "ValidationProblem",
    "description": (
        "RFC 9457 problem details of an invalid request; `errors` lists the invalid fields "
        "when the request does not match its schema."
    ),
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string", "title": "Type"},
        "title": {"type": "string", "title": "Title"},
        "status": {"type": "integer", "title": "Status"},
        "detail": {"type": "string", "title": "Detail"},
        "instance": {"type": "string", "title": "Instance"},
        "errors": {
            "type": "array",
            "title": "Errors",
            "items": {
                "type": "object",
                "required": ["field", "message", "type"],
                "properties": {
                    "field": {"type": "string", "title": "Field"},
                    "message": {"type": "string", "title": "Message"},
                    "type": {"type": "string", "title": "Type"},
                },
            },
        },
    },
}
"""What a service answers with 422: a request that fails validation or a business rule."""

_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")

__all__ = [
    "Conflict",
    "DependencyUnavailable",
    "Forbidden",
    "NotFound",
    "ProblemError",
    "Unauthorized",
    "install_problem_handlers",
    "problem_response",
]


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
    _document_validation_problems(app)


def _document_validation_problems(app: FastAPI) -> None:
    """Make the app's OpenAPI describe its 422 answers as they are sent: problem+json.

    FastAPI documents every 422 as `application/json` with its own `HTTPValidationError`
    body, which `on_validation` above replaces.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        ref = {"$ref": "#/components/schemas/ValidationProblem"}
        for path_item in document.get("paths", {}).values():
            for operation in path_item.values():
                response = (
                    operation.get("responses", {}).get("422")
                    if isinstance(operation, dict)
                    else None
                )
                if response is not None:
                    response["description"] = "Invalid request (problem details)"
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": ref}}
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas["ValidationProblem"] = copy.deepcopy(VALIDATION_PROBLEM_SCHEMA)
        for name in _FASTAPI_VALIDATION_SCHEMAS:  # HTTPValidationError refers to the other
            if f'"#/components/schemas/{name}"' not in json.dumps(document):
                schemas.pop(name, None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
