"""Partner API clients of an organization: registration, scopes, BAA status, secrets.

Every route takes an org admin's access token with a second factor
(`require("clients:manage", mfa=True)`) for its own organization. The client secret is
returned once, at creation and at rotation; only its SHA-256 is stored. Rotating the
secret or disabling the client revokes every token issued under the old secret: the
tokens' `sid` names the secret version, and the revocation is announced with
`SessionRevoked` like a logout, so every service refuses them.

Other changes (scopes, locations, rate limit, BAA dates) apply to tokens issued
afterwards; tokens already out keep their claims until they expire
(`access_token_ttl_s`). Disable or rotate to cut a partner off at once.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from careloop_identity.domain.clients import Baa
from careloop_identity.store.clients import ClientRepository, StoredClient
from careloop_identity.usecases import clients as steps
from careloop_kit.auth import require
from careloop_kit.auth.permissions import PARTNER_SCOPES
from careloop_kit.context import RequestContext, request_context
from careloop_kit.rows import values_of

router = APIRouter(prefix="/organizations/{org_id}/clients", tags=["partner clients"])

ManageClients = Annotated[
    RequestContext[ClientRepository],
    Depends(request_context(require("clients:manage", mfa=True), ClientRepository)),
]

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Scope = Annotated[str, StringConstraints(pattern=r"^[a-z]+:[a-z]+$", max_length=64)]
LocationRef = Annotated[str, StringConstraints(pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9._:-]{0,63})$")]
RateLimit = Annotated[int, Field(ge=1, le=1_000_000)]

SCOPES_HELP = "Partner scopes (permissions) granted: " + ", ".join(f"`{s}`" for s in PARTNER_SCOPES)
LOCATIONS_HELP = 'Location ids the client may reach, or "*" for every location.'
BAA_HELP = (
    "A scope that reaches patient data is granted only while the business associate "
    "agreement is current: baa_signed_on <= today (UTC) < baa_expires_on."
)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClientCreate(_In):
    name: Name
    scopes: list[Scope] = Field(min_length=1, max_length=16, description=SCOPES_HELP)
    locations: list[LocationRef] | Literal["*"] = Field(description=LOCATIONS_HELP)
    rate_limit_per_minute: RateLimit | None = Field(
        default=None,
        description="Requests per minute (the token's `rl`); default: the service setting.",
    )
    baa_signed_on: date | None = Field(default=None, description=BAA_HELP)
    baa_expires_on: date | None = Field(default=None, description=BAA_HELP)


class ClientUpdate(_In):
    """Fields sent are changed; BAA dates may be sent as null to clear them."""

    name: Name | None = None
    scopes: list[Scope] | None = Field(
        default=None, min_length=1, max_length=16, description=SCOPES_HELP
    )
    locations: list[LocationRef] | Literal["*"] | None = Field(
        default=None, description=LOCATIONS_HELP
    )
    rate_limit_per_minute: RateLimit | None = None
    baa_signed_on: date | None = Field(default=None, description=BAA_HELP)
    baa_expires_on: date | None = Field(default=None, description=BAA_HELP)

    @model_validator(mode="after")
    def _only_dates_may_be_null(self) -> ClientUpdate:
        nulls = [
            name
            for name in ("name", "scopes", "locations", "rate_limit_per_minute")
            if name in self.model_fields_set and getattr(self, name) is None
        ]
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null; leave them out to keep them")
        return self


class ClientRead(BaseModel):
    client_id: str
    org_id: str
    name: str
    scopes: list[str]
    locations: list[str]
    rate_limit_per_minute: int
    baa_signed_on: date | None
    baa_expires_on: date | None
    baa_current: bool = Field(description="Whether the BAA covers today (UTC).")
    secret_version: int = Field(description="Counts secret rotations; starts at 1.")
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ClientCreated(ClientRead):
    client_secret: str = Field(
        description="The client secret. Shown only now: store it safely; it cannot be read again."
    )


class ClientPage(BaseModel):
    items: list[ClientRead]


def _read(client: StoredClient, today: date) -> ClientRead:
    return ClientRead(
        **values_of(client, leave_out=("id", "secret_hash")),
        client_id=client.id,
        baa_current=Baa(client.baa_signed_on, client.baa_expires_on).current_on(today),
    )


def _with_secret(created: steps.ClientWithSecret, today: date) -> ClientCreated:
    return ClientCreated(**_read(created.client, today).model_dump(), client_secret=created.secret)


def _call(org_id: str, ctx: ManageClients) -> steps.ClientsCall:
    return steps.ClientsCall(ctx, org_id)


Call = Annotated[steps.ClientsCall, Depends(_call)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ClientCreated)
async def create_client(body: ClientCreate, call: Call) -> ClientCreated:
    """Register a partner API client; its secret is returned only in this response."""
    created = await steps.create_client(call, steps.NewClient(**body.model_dump()))
    return _with_secret(created, steps.today_of(call.runtime))


@router.get("", response_model=ClientPage)
async def list_clients(call: Call, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> ClientPage:
    """List the organization's partner clients (never their secrets)."""
    clients = await steps.list_clients(call, limit=limit)
    today = steps.today_of(call.runtime)
    return ClientPage(items=[_read(c, today) for c in clients])


@router.get("/{client_id}", response_model=ClientRead)
async def read_client(client_id: str, call: Call) -> ClientRead:
    """Read one partner client (never its secret)."""
    client = await steps.read_client(call, client_id)
    return _read(client, steps.today_of(call.runtime))


@router.patch("/{client_id}", response_model=ClientRead)
async def update_client(client_id: str, body: ClientUpdate, call: Call) -> ClientRead:
    """Change a client's name, scopes, locations, rate limit or BAA dates."""
    sent = {name: getattr(body, name) for name in body.model_fields_set}
    updated = await steps.update_client(call, client_id, sent)
    return _read(updated, steps.today_of(call.runtime))


@router.post("/{client_id}/secret", response_model=ClientCreated)
async def rotate_secret(client_id: str, call: Call) -> ClientCreated:
    """Issue a new secret; the old one and every token issued under it stop working now."""
    rotated = await steps.rotate_secret(call, client_id)
    return _with_secret(rotated, steps.today_of(call.runtime))


@router.post("/{client_id}/disable", response_model=ClientRead)
async def disable_client(client_id: str, call: Call) -> ClientRead:
    """Disable a client for good: no new tokens, and its current tokens stop working."""
    disabled = await steps.disable_client(call, client_id)
    return _read(disabled, steps.today_of(call.runtime))
