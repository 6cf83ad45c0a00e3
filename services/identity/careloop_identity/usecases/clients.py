"""Partner API clients of an organization: registration, scopes, BAA status, secrets.

The client secret is returned once, at creation and at rotation; only its SHA-256 is
stored. Rotating the secret or disabling the client revokes every token issued under
the old secret: the tokens' `sid` names the secret version, and the revocation is
announced with `SessionRevoked` like a logout, so every service refuses them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any
from uuid import uuid4

from sqlalchemy.ext.asyncio import AsyncSession

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
from careloop_identity.usecases.common import (
    Invalid,
    announce_revocation,
    identity_entry,
    own_organization,
    settings_of,
    short,
)
from careloop_kit.audit import AuditEntry
from careloop_kit.auth import AuthenticatedPrincipal
from careloop_kit.context import RequestContext
from careloop_kit.problems import Conflict, NotFound, ProblemError
from careloop_kit.service import Runtime


class BaaRequiredProblem(ProblemError):
    """A PHI scope without a current business associate agreement."""

    status, title, slug = 422, "Business associate agreement required", "baa-required"


@dataclass(frozen=True)
class NewClient:
    name: str
    scopes: Sequence[str]
    locations: Sequence[str] | str
    rate_limit_per_minute: int | None = None
    baa_signed_on: date | None = None
    baa_expires_on: date | None = None


@dataclass(frozen=True)
class ClientWithSecret:
    """A client and its secret, shown only now."""

    client: StoredClient
    secret: str


def _baa(client: StoredClient) -> Baa:
    return Baa(client.baa_signed_on, client.baa_expires_on)


def today_of(runtime: Runtime) -> date:
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


@dataclass(frozen=True)
class ClientsCall:
    """A request (the kit's context: who asks, from where, its transaction and the
    client repository on it) on the partner clients of the organization `org_id`."""

    ctx: RequestContext[ClientRepository]
    org_id: str

    @property
    def runtime(self) -> Runtime:
        return self.ctx.runtime

    @property
    def session(self) -> AsyncSession:
        return self.ctx.session

    @property
    def principal(self) -> AuthenticatedPrincipal:
        return self.ctx.principal

    @property
    def clients(self) -> ClientRepository:
        return self.ctx.repos


async def _existing(call: ClientsCall, client_id: str, *, for_update: bool = False) -> StoredClient:
    """The caller's organization's client (locked for a change with `for_update`)."""
    own_organization(call.principal, call.org_id)
    client = await call.clients.get(call.org_id, client_id, for_update=for_update)
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


def _client_entry(action: str, client_id: str, detail: str) -> AuditEntry:
    return identity_entry(action, "Client", client_id, detail=detail)


async def _save(call: ClientsCall, client: StoredClient, detail: str) -> StoredClient:
    """Store a changed client and audit the change, in the caller's transaction."""
    async with call.ctx.audited(_client_entry("update", client.id, detail)):
        await call.clients.save(client)
    return client


async def create_client(call: ClientsCall, new: NewClient) -> ClientWithSecret:
    """Register a partner API client; a PHI scope needs a current BAA."""
    runtime, session, org_id = call.runtime, call.session, call.org_id
    own_organization(call.principal, org_id)
    today = today_of(runtime)
    scopes = _scopes(list(new.scopes))
    locations = await _locations(
        session, org_id, new.locations if isinstance(new.locations, str) else list(new.locations)
    )
    baa = Baa(new.baa_signed_on, new.baa_expires_on)
    _check(scopes, baa, today, granting=True)
    secret = new_secret()
    now = runtime.clock.now()
    client_id = str(uuid4())
    entry = _client_entry("create", client_id, short(f"scopes={' '.join(scopes)}"))
    async with call.ctx.audited(entry):
        client = await call.clients.add(
            StoredClient(
                id=client_id,
                org_id=org_id,
                name=new.name,
                secret_hash=hash_secret(secret),
                secret_version=1,
                scopes=scopes,
                locations=locations,
                rate_limit_per_minute=(
                    new.rate_limit_per_minute or settings_of(runtime).partner_rate_limit_per_minute
                ),
                baa_signed_on=baa.signed_on,
                baa_expires_on=baa.expires_on,
                disabled_at=None,
                created_at=now,
                updated_at=now,
            )
        )
    return ClientWithSecret(client, secret)


async def list_clients(call: ClientsCall, *, limit: int) -> list[StoredClient]:
    """The organization's partner clients."""
    own_organization(call.principal, call.org_id)
    return await call.clients.list_for_org(call.org_id, limit)


async def read_client(call: ClientsCall, client_id: str) -> StoredClient:
    """One partner client of the caller's organization."""
    return await _existing(call, client_id)


async def update_client(call: ClientsCall, client_id: str, sent: dict[str, Any]) -> StoredClient:
    """Change the fields in `sent` (name, scopes, locations, rate limit, BAA dates; the
    dates may be None to clear them)."""
    today = today_of(call.runtime)
    client = await _existing(call, client_id, for_update=True)
    changes: dict[str, Any] = {}
    if sent.get("name") is not None:
        changes["name"] = sent["name"]
    if sent.get("scopes") is not None:
        changes["scopes"] = _scopes(list(sent["scopes"]))
    if sent.get("locations") is not None:
        changes["locations"] = await _locations(call.session, call.org_id, sent["locations"])
    if sent.get("rate_limit_per_minute") is not None:
        changes["rate_limit_per_minute"] = sent["rate_limit_per_minute"]
    for name in ("baa_signed_on", "baa_expires_on"):
        if name in sent:
            changes[name] = sent[name]
    changed = sorted(name for name, value in changes.items() if getattr(client, name) != value)
    if not changed:
        return client
    updated = replace(client, **changes, updated_at=call.runtime.clock.now())
    # Sending scopes grants them anew: a PHI scope among them needs a current BAA. A
    # change of dates alone records the agreement as it is; a lapsed BAA then takes
    # the PHI scopes out of new tokens at the token endpoint.
    _check(updated.scopes, _baa(updated), today, granting="scopes" in changes)
    return await _save(call, updated, short(f"changed: {', '.join(changed)}"))


async def rotate_secret(call: ClientsCall, client_id: str) -> ClientWithSecret:
    """A new secret; the old one and every token issued under it stop working now."""
    client = await _existing(call, client_id, for_update=True)
    if client.disabled_at is not None:
        raise Conflict("This client is disabled; register a new client instead.")
    await _revoke_tokens(call.runtime, call.session, client)
    secret = new_secret()
    rotated = replace(
        client,
        secret_hash=hash_secret(secret),
        secret_version=client.secret_version + 1,
        updated_at=call.runtime.clock.now(),
    )
    detail = f"secret rotated to version {rotated.secret_version}"
    return ClientWithSecret(await _save(call, rotated, detail), secret)


async def disable_client(call: ClientsCall, client_id: str) -> StoredClient:
    """Disable a client for good: no new tokens, and its current tokens stop working."""
    client = await _existing(call, client_id, for_update=True)
    if client.disabled_at is not None:
        return client
    now = call.runtime.clock.now()
    await _revoke_tokens(call.runtime, call.session, client)
    disabled = replace(client, disabled_at=now, updated_at=now)
    return await _save(call, disabled, "disabled")
