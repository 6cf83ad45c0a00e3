"""What the identity routers share: request parsing (bearer token, bootstrap token) and
the problem+json answer for an outcome already committed."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse

from careloop_identity.usecases.common import settings_of
from careloop_kit.problems import ProblemError, Unauthorized, problem_response
from careloop_kit.service import RuntimeDep


def problem(
    request: Request, exc: ProblemError, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A problem+json response for an outcome already committed (failures that must stick)."""
    response = problem_response(
        exc.status, exc.title, exc.slug, exc.detail, request.url.path, **exc.extra
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def bearer_token(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send the access token as `Authorization: Bearer <token>`.")
    return token.strip()


async def require_bootstrap_token(
    runtime: RuntimeDep,
    x_bootstrap_token: Annotated[str | None, Header()] = None,
) -> None:
    """Administration endpoints need the bootstrap token until admin tokens are enforced."""
    expected = settings_of(runtime).bootstrap_token.get_secret_value().encode()
    if x_bootstrap_token is None or not hmac.compare_digest(x_bootstrap_token.encode(), expected):
        raise Unauthorized("Send the bootstrap token in the X-Bootstrap-Token header.")


BootstrapDep = Annotated[None, Depends(require_bootstrap_token)]
