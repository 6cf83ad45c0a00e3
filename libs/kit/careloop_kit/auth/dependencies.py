"""FastAPI dependencies that enforce the permission table inside each service.

    @router.get("/patients/{patient_id}")
    async def read(patient_id: str, principal: Annotated[AuthenticatedPrincipal,
                   Depends(require("patients:read"))]) -> ...:
        record = await load(principal.org_id, patient_id)        # tenant: own org only
        principal.can_access_patient(record.id, record.location_id)  # 403 otherwise

`require(permission)` takes the bearer token, verifies it with the app's
`TokenVerifier` (`runtime.state["token_verifier"]`), checks the permission
against the token's roles (a partner: against its scopes) and returns the
principal. A service without a verifier fails closed with a 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from careloop_contracts.base import Id
from careloop_kit.audit import AUDIT_RECORDER_KEY, AuditEntry, AuditRecorder, request_meta
from careloop_kit.auth.permissions import (
    PERMISSIONS,
    any_allowed,
    audited_as,
    categories_for,
    partner_categories,
    requires_mfa,
    service_categories,
    service_of,
)
from careloop_kit.auth.principal import AuthenticatedPrincipal
from careloop_kit.auth.tokens import Claims, InvalidToken, TokenVerifier
from careloop_kit.problems import Forbidden, ProblemError, problem_response

log = logging.getLogger(__name__)

TOKEN_VERIFIER_KEY = "token_verifier"  # noqa: S105 - a state key, not a secret


class AuthNotConfigured(ProblemError):
    """The service has no token verifier: refuse every request rather than allow."""

    status, title, slug = 500, "Authentication not configured", "auth-not-configured"


def token_verifier_of(app: Any) -> TokenVerifier:
    """The verifier of an app: `app.state.runtime.state["token_verifier"]`
    (or `app.state.token_verifier` for apps without a runtime)."""
    runtime = getattr(app.state, "runtime", None)
    verifier = None
    if runtime is not None:
        verifier = getattr(runtime, "state", {}).get(TOKEN_VERIFIER_KEY)
    if verifier is None:
        verifier = getattr(app.state, TOKEN_VERIFIER_KEY, None)
    if not isinstance(verifier, TokenVerifier):
        raise AuthNotConfigured(
            "This service has no token verifier; set runtime.state['token_verifier'] "
            "in its start-up hook."
        )
    return verifier


def ensure_token_verifier(runtime: Any) -> TokenVerifier:
    """Call from a service's start-up hook: fail start-up without a verifier."""
    verifier = getattr(runtime, "state", {}).get(TOKEN_VERIFIER_KEY)
    if not isinstance(verifier, TokenVerifier):
        raise RuntimeError(
            "runtime.state['token_verifier'] must hold a TokenVerifier before serving requests"
        )
    return verifier


def bearer_token(request: Request) -> str:
    """The token of an `Authorization: Bearer ...` header, or `InvalidToken`."""
    header = request.headers.get("authorization")
    if not header:
        raise InvalidToken("Send an access token: Authorization: Bearer <token>.")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise InvalidToken("Use the Bearer scheme: Authorization: Bearer <token>.")
    return token


def principal_from_claims(claims: Claims, *, now: float | None = None) -> AuthenticatedPrincipal:
    """The principal a verified token speaks for. Break-glass grants (`bg`) that
    have expired at `now` (epoch seconds; the wall clock when not given) are left out."""
    at = time.time() if now is None else now
    return AuthenticatedPrincipal(
        actor_id=claims.sub,
        actor_type=claims.act,
        org_id=claims.org,
        purpose_of_use="TREAT",
        roles=claims.roles,
        locations=claims.loc,
        patient_id=claims.pat,
        session_id=claims.sid,
        scopes=claims.scopes,
        token_id=claims.jti,
        amr=claims.amr,
        grants=tuple(grant for grant in claims.break_glass if grant.active_at(at)),
    )


def permits(principal: AuthenticatedPrincipal, permission: str) -> bool:
    """Whether the principal holds `permission`: partners through their scopes,
    services through their service's grants, everyone else through their roles."""
    if principal.actor_type == "partner":
        return permission in principal.scopes
    if principal.actor_type == "service":
        return service_categories(service_of(principal.actor_id), permission) is not None
    return any_allowed(principal.roles, permission)


def visible_categories(principal: AuthenticatedPrincipal, permission: str) -> frozenset[str]:
    """PHI categories the principal may see through `permission`: a partner's from
    the partner scope table, a service's from its grants, a user's from its roles."""
    if not permits(principal, permission):
        return frozenset()
    if principal.actor_type == "partner":
        return partner_categories(principal.scopes, permission)
    if principal.actor_type == "service":
        return service_categories(service_of(principal.actor_id), permission) or frozenset()
    return categories_for(principal.roles, permission)


async def authenticate(request: Request) -> AuthenticatedPrincipal:
    """Verify the bearer token of a request; no permission check."""
    verifier = token_verifier_of(request.app)
    token = bearer_token(request)
    claims = await verifier.verify(token)
    principal = principal_from_claims(claims, now=verifier.clock.now().timestamp())
    request.state.principal = principal
    return principal


class MfaRequired(Forbidden):
    """A role that must sign in with a second factor presented a token without one."""

    title, slug = "Multi-factor authentication required", "mfa-required"


def lacks_required_mfa(principal: AuthenticatedPrincipal) -> bool:
    """Whether one of the principal's roles requires MFA (`requires_mfa`) and its
    token's `amr` has no `otp`."""
    return any(requires_mfa(role) for role in principal.roles) and not principal.used_mfa


def ensure_mfa(principal: AuthenticatedPrincipal) -> None:
    """`MfaRequired` (403) unless the principal satisfied its roles' MFA rule."""
    if lacks_required_mfa(principal):
        raise MfaRequired(
            "multi-factor authentication required: sign in again with a one-time code."
        )


PERMISSION_ATTRIBUTE = "__careloop_permission__"


def require(
    permission: str, *, mfa: bool = False
) -> Callable[[Request], Awaitable[AuthenticatedPrincipal]]:
    """A dependency: a verified principal holding `permission`, or 401/403.

    With `mfa=True` a principal whose roles require MFA (see
    `careloop_kit.auth.permissions.requires_mfa`) must carry `otp` in its token's
    `amr`, or gets 403 "multi-factor authentication required".

    The dependency carries its permission as `__careloop_permission__`, so a walk
    of an app's routes can tell which routes are authorized.
    """
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}; add it to the permission table")

    async def dependency(request: Request) -> AuthenticatedPrincipal:
        principal = await authenticate(request)
        try:
            if not permits(principal, permission):
                raise Forbidden(f"Your role does not allow {permission}.")
            if mfa:
                ensure_mfa(principal)
        except Forbidden as refusal:
            await _audit_refusal(request, principal, permission, refusal)
            raise
        return principal

    dependency.__name__ = f"require_{permission.replace(':', '_')}"
    dependency.required_permission = permission  # type: ignore[attr-defined]
    setattr(dependency, PERMISSION_ATTRIBUTE, permission)
    return dependency


# How a refused permission's verb reads as an audit action.
_REFUSAL_ACTION = {"search": "query", "verify": "read", "export": "export"}


async def _audit_refusal(
    request: Request, principal: AuthenticatedPrincipal, permission: str, refusal: Forbidden
) -> None:
    """A refused attempt is audited too (HIPAA audit controls: failures included)."""
    runtime = getattr(request.app.state, "runtime", None)
    recorder = getattr(runtime, "state", {}).get(AUDIT_RECORDER_KEY) if runtime else None
    if not isinstance(recorder, AuditRecorder):
        return
    verb = permission.partition(":")[2]
    patient_id = _valid_id(request.path_params.get("patient_id"))
    entry = AuditEntry(
        action=_REFUSAL_ACTION.get(
            verb, verb if verb in ("create", "read", "update", "merge") else "read"
        ),
        resource_type=audited_as(permission),
        phi_categories=[],
        patient_id=patient_id,
        resource_id=patient_id,
    )
    try:
        meta = request_meta(request)
        await recorder.record_failure(
            principal,
            entry,
            "denied",
            f"403 {refusal.slug}",
            meta["request_id"],
            meta["source_ip"],
        )
    except Exception:
        # The caller is refused either way; a lost refusal record must be loud.
        log.exception("could not audit a refused %s by %s", permission, principal.actor_id)


def _valid_id(value: object) -> str | None:
    """The path's id if it is a well-formed id; a garbage id is not worth recording."""
    try:
        return TypeAdapter(Id).validate_python(value)
    except ValidationError:
        return None


def required_permission(call: object) -> str | None:
    """The permission a `require(...)` dependency enforces (None for anything else)."""
    value = getattr(call, PERMISSION_ATTRIBUTE, None)
    return value if isinstance(value, str) else None


def install_auth_handlers(app: FastAPI) -> None:
    """Answer `InvalidToken` with 401 problem+json plus `WWW-Authenticate: Bearer`
    (RFC 6750). Call after `install_problem_handlers`."""

    async def on_invalid_token(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InvalidToken)
        response = problem_response(
            exc.status, exc.title, exc.slug, exc.detail, request.url.path, **exc.extra
        )
        if request.headers.get("authorization"):
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        else:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    app.add_exception_handler(InvalidToken, on_invalid_token)
