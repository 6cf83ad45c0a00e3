"""The OAuth 2.0 token endpoint: `POST /oauth/token` (RFC 6749 §3.2).

Two grants:
- `client_credentials` (RFC 6749 §4.4): a partner API client authenticates with its
  secret, by HTTP Basic (`client_secret_basic`) or form fields (`client_secret_post`),
  and gets a short access token (`act: partner`) carrying its scopes, locations and
  rate limit (`rl`). Scopes that reach patient data are issued only while the
  client's business associate agreement is current (`usecases.partner_tokens`).
- `urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523): Careloop services, handed
  to `careloop_identity.usecases.service_tokens`.

Errors are problem+json carrying the RFC 6749 §5.2 `error` code (and
`error_description`), so OAuth client libraries understand them. Failed client
authentication is committed to the audit trail before the 401 goes out, so this
route does not use `SessionDep`: the use case opens its transaction itself.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote_plus

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from careloop_identity.api.common import problem
from careloop_identity.usecases.common import Failure
from careloop_identity.usecases.partner_tokens import ClientCredentials, issue_client_token
from careloop_identity.usecases.service_tokens import (
    JWT_BEARER_GRANT,
    InvalidRequest,
    UnsupportedGrant,
    exchange_service_assertion,
)
from careloop_kit.audit import request_meta
from careloop_kit.service import RuntimeDep

router = APIRouter(tags=["oauth"])

CLIENT_CREDENTIALS = "client_credentials"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 8192
MAX_FORM_FIELDS = 16
# RFC 6749 §5.1: token responses must not be cached by anyone.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class ClientTokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a scheme name, not a secret)
    expires_in: int
    scope: str


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
    """The form fields of the request; `InvalidRequest` for anything else."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != FORM_MEDIA_TYPE:
        raise InvalidRequest(f"Send the token request as {FORM_MEDIA_TYPE} (RFC 6749 §4.4).")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_FORM_BYTES:
            raise InvalidRequest("The token request is too large.")
    try:
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FORM_FIELDS,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("The token request form cannot be read.") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        # RFC 6749 §3.2: parameters must not repeat (ambiguous requests are refused).
        if name in form:
            raise InvalidRequest(f"The parameter {name!r} is sent more than once.")
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
        raise InvalidRequest(
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
        raise InvalidRequest("client_id in the form differs from the Basic credentials.")
    return credentials


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
            raise InvalidRequest("The jwt-bearer grant needs the `assertion` parameter.")
        # The form is parsed here (the body stream is spent), so `org` is handed over.
        body = await exchange_service_assertion(
            runtime,
            assertion=assertion,
            scope=form.get("scope"),
            org=form.get("org"),
            meta=request_meta(request),
        )
        return JSONResponse(body, headers=NO_STORE)
    if grant_type is None:
        raise InvalidRequest("The `grant_type` parameter is missing.")
    if grant_type != CLIENT_CREDENTIALS:
        raise UnsupportedGrant(f"Supported grant types: {CLIENT_CREDENTIALS}, {JWT_BEARER_GRANT}.")
    outcome = await issue_client_token(
        runtime, _credentials(request, form), form.get("scope"), meta=request_meta(request)
    )
    if isinstance(outcome, Failure):
        return problem(request, outcome.error, {**NO_STORE, **(outcome.headers or {})})
    response = ClientTokenResponse(
        access_token=outcome.access_token, expires_in=outcome.expires_in, scope=outcome.scope
    )
    return JSONResponse(response.model_dump(), headers=NO_STORE)
