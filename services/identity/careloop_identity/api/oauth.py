"""The OAuth 2.0 token endpoint: `POST /oauth/token` (RFC 6749 §3.2).

Two grants:
- `client_credentials` (RFC 6749 §4.4): a partner API client authenticates with its
  secret, by HTTP Basic (`client_secret_basic`) or form fields (`client_secret_post`),
  and gets a short access token (`act: partner`) carrying its scopes, locations and
  rate limit (`rl`). Scopes that reach patient data are issued only while the
  client's business associate agreement is current.
- `urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523): Careloop services, handed
  to `careloop_identity.api.service_tokens`.

Errors are problem+json carrying the RFC 6749 §5.2 `error` code (and
`error_description`), so OAuth client libraries understand them. Failed client
authentication is committed to the audit trail before the 401 goes out, so this
route manages its transaction itself, like the login route.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, unquote_plus

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_identity.api.common import problem
from careloop_identity.api.service_tokens import JWT_BEARER_GRANT, exchange_service_assertion
from careloop_identity.domain.clients import (
    Baa,
    ScopeRefused,
    effective_scopes,
    hash_secret,
    parse_scope_parameter,
    secret_matches,
    session_id,
    utc_day,
)
from careloop_identity.domain.tokens import AccessGrant
from careloop_identity.store.clients import ClientRepository, StoredClient
from careloop_identity.usecases.common import UNKNOWN_ACTOR, audit, signer_of
from careloop_kit.audit import request_meta
from careloop_kit.auth import Principal
from careloop_kit.problems import ProblemError
from careloop_kit.service import Runtime, RuntimeDep

router = APIRouter(tags=["oauth"])

CLIENT_CREDENTIALS = "client_credentials"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 8192
MAX_FORM_FIELDS = 16
MAX_CLIENT_ID = 128
# RFC 6749 §5.1: token responses must not be cached by anyone.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
BASIC_CHALLENGE = 'Basic realm="careloop"'
# What the audit trail calls a partner's token request (a `ServiceToken` for services).
TOKEN_RESOURCE = "ClientToken"  # noqa: S105 - a resource type, not a secret
# Compared against when the client is unknown, so that case costs the same hash work.
_NO_CLIENT_HASH = hash_secret("no client has this secret")
CLIENT_AUTH_FAILED = (
    "Client authentication failed: unknown client, wrong secret, or a disabled client. "
    "Send client_id and client_secret by HTTP Basic or as form fields."
)


class OAuthError(ProblemError):
    """A token-endpoint error: problem+json plus the RFC 6749 `error` code."""

    error: ClassVar[str] = "invalid_request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, error=self.error, error_description=detail, **extra)


class InvalidTokenRequest(OAuthError):
    status, title, slug = 400, "Invalid token request", "invalid-token-request"
    error = "invalid_request"


class InvalidClientCredentials(OAuthError):
    status, title, slug = 401, "Client authentication failed", "invalid-client"
    error = "invalid_client"


class InvalidScope(OAuthError):
    status, title, slug = 400, "Invalid scope", "invalid-scope"
    error = "invalid_scope"


class UnsupportedGrantType(OAuthError):
    status, title, slug = 400, "Unsupported grant type", "unsupported-grant-type"
    error = "unsupported_grant_type"


class ClientTokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a scheme name, not a secret)
    expires_in: int
    scope: str


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    secret: str


@dataclass
class Failure:
    """A refused request whose audit record is committed before answering."""

    error: ProblemError
    headers: dict[str, str]


_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "enum": [CLIENT_CREDENTIALS, JWT_BEARER_GRANT]},
        "scope": {"type": "string", "description": "Space-separated scopes (optional)."},
        "client_id": {"type": "string", "description": "client_secret_post only."},
        "client_secret": {"type": "string", "description": "client_secret_post only."},
        "assertion": {"type": "string", "description": "The JWT, for the jwt-bearer grant."},
        "org": {"type": "string", "description": "jwt-bearer: the organization acted for."},
    },
}


async def _form(request: Request) -> dict[str, str]:
    """The form fields of the request; `InvalidTokenRequest` for anything else."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != FORM_MEDIA_TYPE:
        raise InvalidTokenRequest(f"Send the token request as {FORM_MEDIA_TYPE} (RFC 6749 §4.4).")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_FORM_BYTES:
            raise InvalidTokenRequest("The token request is too large.")
    try:
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FORM_FIELDS,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidTokenRequest("The token request form cannot be read.") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        # RFC 6749 §3.2: parameters must not repeat (ambiguous requests are refused).
        if name in form:
            raise InvalidTokenRequest(f"The parameter {name!r} is sent more than once.")
        form[name] = value
    return form


def _credentials(request: Request, form: dict[str, str]) -> ClientCredentials | None:
    """The client's credentials from HTTP Basic or the form; None when neither is sent.
    A malformed Authorization header counts as failed client authentication."""
    header = request.headers.get("authorization")
    posted_id, posted_secret = form.get("client_id"), form.get("client_secret")
    if header is None:
        if posted_id is None or posted_secret is None:
            return None
        return ClientCredentials(posted_id, posted_secret)
    if posted_secret is not None:
        raise InvalidTokenRequest(
            "Use one client authentication method: HTTP Basic or form fields, not both."
        )
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return ClientCredentials("", "")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ClientCredentials("", "")
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        return ClientCredentials("", "")
    # RFC 6749 §2.3.1: both are form-encoded before they go into the Basic header.
    credentials = ClientCredentials(unquote_plus(client_id), unquote_plus(secret))
    if posted_id is not None and posted_id != credentials.client_id:
        raise InvalidTokenRequest("client_id in the form differs from the Basic credentials.")
    return credentials


def _partner(client: StoredClient) -> Principal:
    return Principal(actor_id=client.id, actor_type="partner", org_id=client.org_id)


# Who failed to authenticate is unknown. The presented client_id is not recorded: a
# partner who swaps its fields would otherwise write its secret into the audit trail.
_UNKNOWN_CLIENT = Principal(actor_id=UNKNOWN_ACTOR, actor_type="partner", org_id=UNKNOWN_ACTOR)


async def _authenticate(
    runtime: Runtime, session: AsyncSession, request: Request, form: dict[str, str]
) -> StoredClient | Failure:
    credentials = _credentials(request, form)
    client = None
    if credentials is not None and 0 < len(credentials.client_id) <= MAX_CLIENT_ID:
        client = await ClientRepository(session).find(credentials.client_id)

    async def refuse(who: Principal, reason: str) -> Failure:
        await audit(
            runtime,
            session,
            request_meta(request),
            who,
            action="create",
            resource_type=TOKEN_RESOURCE,
            resource_id=None,
            outcome="denied",
            detail=f"401 {reason}",
        )
        return Failure(
            InvalidClientCredentials(CLIENT_AUTH_FAILED), {"WWW-Authenticate": BASIC_CHALLENGE}
        )

    if credentials is None:
        return await refuse(_UNKNOWN_CLIENT, "no client credentials")
    if client is None:
        secret_matches(credentials.secret, _NO_CLIENT_HASH)
        return await refuse(_UNKNOWN_CLIENT, "unknown client")
    if not secret_matches(credentials.secret, client.secret_hash):
        return await refuse(_partner(client), "wrong client secret")
    # Checked after the secret, so only the secret's holder learns it is disabled (from
    # the audit trail of its organization; the answer is the same).
    if client.disabled_at is not None:
        return await refuse(_partner(client), "client disabled")
    return client


async def _client_credentials(
    runtime: Runtime, session: AsyncSession, request: Request, form: dict[str, str]
) -> ClientTokenResponse | Failure:
    authenticated = await _authenticate(runtime, session, request, form)
    if isinstance(authenticated, Failure):
        return authenticated
    client = authenticated
    now = runtime.clock.now()
    sid = session_id(client.id, client.secret_version)

    async def record(outcome: str, detail: str, resource_id: str | None) -> None:
        await audit(
            runtime,
            session,
            request_meta(request),
            _partner(client),
            action="create",
            resource_type=TOKEN_RESOURCE,
            resource_id=resource_id,
            outcome=outcome,
            detail=detail[:128],
        )

    try:
        scopes = effective_scopes(
            parse_scope_parameter(form.get("scope")),
            client.scopes,
            Baa(client.baa_signed_on, client.baa_expires_on),
            utc_day(now),
        )
    except ScopeRefused as exc:
        await record("denied", "400 invalid_scope", None)
        return Failure(InvalidScope(str(exc)), {})
    scope = " ".join(scopes)
    signer = signer_of(runtime)
    token = await signer.issue(
        AccessGrant(
            user_id=client.id,
            org_id=client.org_id,
            session_id=sid,
            actor_type="partner",
            roles=(),
            locations=client.locations,
            patient_id=None,
            amr=(),
            scope=scope,
            rate_limit=client.rate_limit_per_minute,
        )
    )
    await record("success", f"scope={scope}", sid)
    return ClientTokenResponse(
        access_token=token, expires_in=int(signer.ttl.total_seconds()), scope=scope
    )


@router.post(
    "/oauth/token",
    response_model=ClientTokenResponse,
    responses={
        400: {"description": "invalid_request, invalid_scope or unsupported_grant_type"},
        401: {"description": "invalid_client"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {FORM_MEDIA_TYPE: {"schema": _FORM_SCHEMA}},
        }
    },
)
async def token(request: Request, runtime: RuntimeDep) -> Any:
    """Issue an access token: client credentials (partners) or a JWT assertion (services)."""
    form = await _form(request)
    grant_type = form.get("grant_type")
    if grant_type == JWT_BEARER_GRANT:
        assertion = form.get("assertion")
        if not assertion:
            raise InvalidTokenRequest("The jwt-bearer grant needs the `assertion` parameter.")
        # The form is parsed here (the body stream is spent), so `org` is handed over.
        body = await exchange_service_assertion(
            request, runtime, assertion=assertion, scope=form.get("scope"), org=form.get("org")
        )
        return JSONResponse(body, headers=NO_STORE)
    if grant_type is None:
        raise InvalidTokenRequest("The `grant_type` parameter is missing.")
    if grant_type != CLIENT_CREDENTIALS:
        raise UnsupportedGrantType(
            f"Supported grant types: {CLIENT_CREDENTIALS}, {JWT_BEARER_GRANT}."
        )
    async with runtime.sessionmaker() as session, session.begin():
        outcome = await _client_credentials(runtime, session, request, form)
    if isinstance(outcome, Failure):
        return problem(request, outcome.error, {**NO_STORE, **outcome.headers})
    return JSONResponse(outcome.model_dump(), headers=NO_STORE)
