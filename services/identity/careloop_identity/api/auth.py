"""Login, refresh, logout, TOTP enrollment, break-glass and the JWKS.

The steps are `careloop_identity.usecases.auth`; they commit failures that must stick
before answering, so these routes do not use `SessionDep`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response, status
from fastapi.responses import JSONResponse

from careloop_identity.api.common import bearer_token, problem
from careloop_identity.api.schemas import (
    BreakGlassRequest,
    BreakGlassResponse,
    LoginRequest,
    LogoutRequest,
    MfaEnrollment,
    MfaStatus,
    MfaVerify,
    RefreshRequest,
    TokenResponse,
)
from careloop_identity.usecases import auth as steps
from careloop_identity.usecases.common import Failure, signer_of
from careloop_kit.audit import request_meta
from careloop_kit.service import RuntimeDep

router = APIRouter(tags=["authentication"])


def _answer(request: Request, outcome: Failure | Any) -> Any:
    """A committed refusal as problem+json; otherwise the outcome's fields."""
    if isinstance(outcome, Failure):
        return problem(request, outcome.error, outcome.headers)
    return asdict(outcome)


@router.post(
    "/auth/login",
    response_model=TokenResponse,
    responses={401: {"description": "Wrong credentials"}, 423: {"description": "Locked"}},
)
async def login(body: LoginRequest, request: Request, runtime: RuntimeDep) -> Any:
    """Sign in with email and password (and a TOTP code once enrolled)."""
    credentials = steps.Credentials(**body.model_dump())
    return _answer(request, await steps.login(runtime, credentials, meta=request_meta(request)))


@router.post("/auth/refresh", response_model=TokenResponse, responses={401: {}})
async def refresh(body: RefreshRequest, request: Request, runtime: RuntimeDep) -> Any:
    """Exchange a refresh token for new tokens (the old refresh token stops working)."""
    outcome = await steps.refresh(runtime, body.refresh_token, meta=request_meta(request))
    return _answer(request, outcome)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, responses={401: {}})
async def logout(
    request: Request,
    runtime: RuntimeDep,
    body: LogoutRequest | None = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """End the session of a bearer access token or of a refresh token."""
    await steps.logout(
        runtime,
        access_token=bearer_token(authorization),
        refresh_token=body.refresh_token if body is not None else None,
        meta=request_meta(request),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/auth/mfa/enroll", response_model=MfaEnrollment, responses={401: {}, 409: {}})
async def enroll_mfa(
    request: Request,
    runtime: RuntimeDep,
    authorization: Annotated[str | None, Header()] = None,
) -> MfaEnrollment:
    """Start TOTP enrollment: returns the secret to add to an authenticator app."""
    enrolled = await steps.enroll_mfa(
        runtime, bearer_token(authorization), meta=request_meta(request)
    )
    return MfaEnrollment(secret=enrolled.secret, otpauth_uri=enrolled.otpauth_uri)


@router.post("/auth/mfa/verify", response_model=MfaStatus, responses={401: {}, 422: {}})
async def verify_mfa(
    body: MfaVerify,
    request: Request,
    runtime: RuntimeDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Any:
    """Confirm enrollment with a current code; from then on login needs a code too."""
    outcome = await steps.verify_mfa(
        runtime, bearer_token(authorization), body.code, meta=request_meta(request)
    )
    if isinstance(outcome, Failure):
        return problem(request, outcome.error, outcome.headers)
    return MfaStatus(mfa_enabled=outcome)


@router.post(
    "/auth/break-glass",
    response_model=BreakGlassResponse,
    status_code=status.HTTP_201_CREATED,
    responses={401: {}, 403: {"description": "Not a provider, or no one-time code"}, 409: {}},
)
async def break_glass(
    body: BreakGlassRequest,
    request: Request,
    runtime: RuntimeDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Any:
    """Emergency access: open one patient outside your locations for a limited time
    (`break_glass_ttl_s`) with a typed reason. Audited (purpose `ETREAT`) and announced
    as an alert event; returns an access token that carries the grant."""
    ask = steps.BreakGlassAsk(**body.model_dump())
    outcome = await steps.break_glass(
        runtime, bearer_token(authorization), ask, meta=request_meta(request)
    )
    return _answer(request, outcome)


# --- JWKS ----------------------------------------------------------------------------


@router.get("/.well-known/jwks.json", tags=["keys"])
async def jwks(runtime: RuntimeDep) -> JSONResponse:
    """Public keys that verify access tokens (every key version still valid)."""
    body = await signer_of(runtime).jwks()
    # Short cache: verifiers refetch on an unknown kid anyway, so rotation is quick.
    return JSONResponse(body, headers={"Cache-Control": "public, max-age=60"})
