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

from dataclasses import replace
from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import uuid4

from fastapi import APIRouter, Depends, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_identity.api.common import (
    Invalid,
    announce_revocation,
    audit,
    own_organization,
    settings_of,
)
from careloop_identity.domain.clients import (
    ALL_LOCATIONS,
    Baa,
    BaaRequired,
    InvalidClient,
    check_baa_dates,
    check_grant,
    hash_secret,
    new_secret,
    normalize_locations,
    normalize_scopes,
    session_id,
    utc_day,
)
from careloop_identity.store.clients import ClientRepository, StoredClient
from careloop_identity.store.repository import IdentityRepository
from careloop_kit.auth import AuthenticatedPrincipal, require
from careloop_kit.auth.permissions import PARTNER_SCOPES
from careloop_kit.problems import Conflict, NotFound, ProblemError
from careloop_kit.service import Runtime, RuntimeDep, SessionDep

router = APIRouter(prefix="/organizations/{org_id}/clients", tags=["partner clients"])

ManageClients = Annotated[AuthenticatedPrincipal, Depends(require("clients:manage", mfa=True))]

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


class BaaRequiredProblem(ProblemError):
    """A PHI scope without a current business associate agreement."""

    status, title, slug = 422, "Business associate agreement required", "baa-required"


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


def _baa(client: StoredClient) -> Baa:
    return Baa(client.baa_signed_on, client.baa_expires_on)


def _read(client: StoredClient, today: date) -> ClientRead:
    return ClientRead(
        client_id=client.id,
        org_id=client.org_id,
        name=client.name,
        scopes=list(client.scopes),
        locations=list(client.locations),
        rate_limit_per_minute=client.rate_limit_per_minute,
        baa_signed_on=client.baa_signed_on,
        baa_expires_on=client.baa_expires_on,
        baa_current=_baa(client).current_on(today),
        secret_version=client.secret_version,
        disabled_at=client.disabled_at,
        created_at=client.created_at,
        updated_at=client.updated_at,
    )


def _with_secret(client: StoredClient, secret: str, today: date) -> ClientCreated:
    return ClientCreated(**_read(client, today).model_dump(), client_secret=secret)


def _short(text: str, limit: int = 128) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _today(runtime: Runtime) -> date:
    return utc_day(runtime.clock.now())


async def _locations(
    session: AsyncSession, org_id: str, locations: list[str] | str
) -> tuple[str, ...]:
    try:
        scope = normalize_locations(locations)
    except InvalidClient as exc:
        raise Invalid(str(exc)) from exc
    if scope != (ALL_LOCATIONS,):
        unknown = set(scope) - await IdentityRepository(session).location_ids(org_id)
        if unknown:
            raise Invalid(f"Unknown locations in this organization: {sorted(unknown)}.")
    return scope


def _check(scopes: tuple[str, ...], baa: Baa, today: date, *, granting: bool) -> None:
    """Refuse impossible BAA dates, and PHI scopes being granted without a current BAA."""
    try:
        check_baa_dates(baa)
        if granting:
            check_grant(scopes, baa, today)
    except BaaRequired as exc:
        raise BaaRequiredProblem(str(exc), phi_scopes=list(exc.phi_scopes)) from exc
    except InvalidClient as exc:
        raise Invalid(str(exc)) from exc


def _scopes(scopes: list[str]) -> tuple[str, ...]:
    try:
        return normalize_scopes(scopes)
    except InvalidClient as exc:
        raise Invalid(str(exc)) from exc


async def _existing(
    session: AsyncSession, org_id: str, client_id: str, *, for_update: bool = False
) -> StoredClient:
    client = await ClientRepository(session).get(org_id, client_id, for_update=for_update)
    if client is None:
        raise NotFound(f"No client {client_id} in this organization.")
    return client


async def _revoke_tokens(runtime: Runtime, session: AsyncSession, client: StoredClient) -> None:
    """Announce that tokens of the client's current secret version are dead."""
    await announce_revocation(
        runtime,
        session,
        session_id=session_id(client.id, client.secret_version),
        org_id=client.org_id,
        subject=client.id,
        reason="admin",
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ClientCreated)
async def create_client(
    org_id: str,
    body: ClientCreate,
    request: Request,
    principal: ManageClients,
    runtime: RuntimeDep,
    session: SessionDep,
) -> ClientCreated:
    """Register a partner API client; its secret is returned only in this response."""
    own_organization(principal, org_id)
    today = _today(runtime)
    scopes = _scopes(body.scopes)
    locations = await _locations(session, org_id, body.locations)
    baa = Baa(body.baa_signed_on, body.baa_expires_on)
    _check(scopes, baa, today, granting=True)
    secret = new_secret()
    now = runtime.clock.now()
    client = await ClientRepository(session).add(
        StoredClient(
            id=str(uuid4()),
            org_id=org_id,
            name=body.name,
            secret_hash=hash_secret(secret),
            secret_version=1,
            scopes=scopes,
            locations=locations,
            rate_limit_per_minute=(
                body.rate_limit_per_minute or settings_of(runtime).partner_rate_limit_per_minute
            ),
            baa_signed_on=baa.signed_on,
            baa_expires_on=baa.expires_on,
            disabled_at=None,
            created_at=now,
            updated_at=now,
        )
    )
    await audit(
        runtime,
        session,
        request,
        principal,
        action="create",
        resource_type="Client",
        resource_id=client.id,
        detail=_short(f"scopes={' '.join(scopes)}"),
    )
    return _with_secret(client, secret, today)


@router.get("", response_model=ClientPage)
async def list_clients(
    org_id: str,
    principal: ManageClients,
    runtime: RuntimeDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ClientPage:
    """List the organization's partner clients (never their secrets)."""
    own_organization(principal, org_id)
    today = _today(runtime)
    clients = await ClientRepository(session).list_for_org(org_id, limit)
    return ClientPage(items=[_read(c, today) for c in clients])


@router.get("/{client_id}", response_model=ClientRead)
async def read_client(
    org_id: str,
    client_id: str,
    principal: ManageClients,
    runtime: RuntimeDep,
    session: SessionDep,
) -> ClientRead:
    """Read one partner client (never its secret)."""
    own_organization(principal, org_id)
    return _read(await _existing(session, org_id, client_id), _today(runtime))


@router.patch("/{client_id}", response_model=ClientRead)
async def update_client(
    org_id: str,
    client_id: str,
    body: ClientUpdate,
    request: Request,
    principal: ManageClients,
    runtime: RuntimeDep,
    session: SessionDep,
) -> ClientRead:
    """Change a client's name, scopes, locations, rate limit or BAA dates."""
    own_organization(principal, org_id)
    today = _today(runtime)
    client = await _existing(session, org_id, client_id, for_update=True)
    sent = body.model_fields_set
    changes: dict[str, Any] = {}
    if body.name is not None:
        changes["name"] = body.name
    if body.scopes is not None:
        changes["scopes"] = _scopes(body.scopes)
    if body.locations is not None:
        changes["locations"] = await _locations(session, org_id, body.locations)
    if body.rate_limit_per_minute is not None:
        changes["rate_limit_per_minute"] = body.rate_limit_per_minute
    for name in ("baa_signed_on", "baa_expires_on"):
        if name in sent:
            changes[name] = getattr(body, name)
    changed = sorted(name for name, value in changes.items() if getattr(client, name) != value)
    if not changed:
        return _read(client, today)
    updated = replace(client, **changes, updated_at=runtime.clock.now())
    # Sending scopes grants them anew: a PHI scope among them needs a current BAA. A
    # change of dates alone records the agreement as it is; a lapsed BAA then takes
    # the PHI scopes out of new tokens at the token endpoint.
    _check(updated.scopes, _baa(updated), today, granting="scopes" in changes)
    await ClientRepository(session).save(updated)
    await audit(
        runtime,
        session,
        request,
        principal,
        action="update",
        resource_type="Client",
        resource_id=client.id,
        detail=_short(f"changed: {', '.join(changed)}"),
    )
    return _read(updated, today)


@router.post("/{client_id}/secret", response_model=ClientCreated)
async def rotate_secret(
    org_id: str,
    client_id: str,
    request: Request,
    principal: ManageClients,
    runtime: RuntimeDep,
    session: SessionDep,
) -> ClientCreated:
    """Issue a new secret; the old one and every token issued under it stop working now."""
    own_organization(principal, org_id)
    client = await _existing(session, org_id, client_id, for_update=True)
    if client.disabled_at is not None:
        raise Conflict("This client is disabled; register a new client instead.")
    now = runtime.clock.now()
    await _revoke_tokens(runtime, session, client)
    secret = new_secret()
    rotated = replace(
        client,
        secret_hash=hash_secret(secret),
        secret_version=client.secret_version + 1,
        updated_at=now,
    )
    await ClientRepository(session).save(rotated)
    await audit(
        runtime,
        session,
        request,
        principal,
        action="update",
        resource_type="Client",
        resource_id=client.id,
        detail=f"secret rotated to version {rotated.secret_version}",
    )
    return _with_secret(rotated, secret, _today(runtime))


@router.post("/{client_id}/disable", response_model=ClientRead)
async def disable_client(
    org_id: str,
    client_id: str,
    request: Request,
    principal: ManageClients,
    runtime: RuntimeDep,
    session: SessionDep,
) -> ClientRead:
    """Disable a client for good: no new tokens, and its current tokens stop working."""
    own_organization(principal, org_id)
    client = await _existing(session, org_id, client_id, for_update=True)
    if client.disabled_at is not None:
        return _read(client, _today(runtime))
    now = runtime.clock.now()
    await _revoke_tokens(runtime, session, client)
    disabled = replace(client, disabled_at=now, updated_at=now)
    await ClientRepository(session).save(disabled)
    await audit(
        runtime,
        session,
        request,
        principal,
        action="update",
        resource_type="Client",
        resource_id=client.id,
        detail="disabled",
    )
    return _read(disabled, _today(runtime))
