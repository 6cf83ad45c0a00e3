"""Typed business errors that carry their HTTP status.

Kept apart from the HTTP mapping (careloop_kit.problems) so that pure code, a service's
`domain/` included, can raise them without loading a web framework.
"""

from __future__ import annotations

from typing import Any


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
