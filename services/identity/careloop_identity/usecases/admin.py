"""Organizations, locations, users and their roles.

Creating an organization (a tenant) is the platform operator's act (the route checks
the bootstrap token) and may create the organization's first org admin. Everything
inside an organization is done by a principal of that organization: another tenant's
organization answers 404. A location manager sees only the accounts of locations in
its scope.

A role change ends the user's open sessions (their tokens carry the old roles) and is
announced with the old and new assignment; the last org admin cannot be demoted, so an
organization never locks itself out of its own administration.

Identity owns locations: creating or changing one publishes `LocationCreated` /
`LocationChanged` (the location's whole state: name, zone, sensitivity, feature
switches) through the outbox in the same transaction, and other services keep their
view of locations from those events only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.identity import LocationChanged, LocationCreated, UserRolesChanged
from careloop_identity.domain.locations import InvalidTimeZone, validate_time_zone
from careloop_identity.domain.password import WeakPassword, check_password
from careloop_identity.domain.roles import (
    ALL_LOCATIONS,
    Assignment,
    InvalidAssignment,
    make_assignment,
)
from careloop_identity.store.repository import (
    DuplicateEmail,
    IdentityRepository,
    StoredLocation,
    StoredOrganization,
    StoredUser,
)
from careloop_identity.usecases.common import (
    BOOTSTRAP_ACTOR,
    Invalid,
    RequestMeta,
    hasher_of,
    identity_entry,
    own_organization,
    revoke_login,
    short,
)
from careloop_kit.audit import AuditEntry
from careloop_kit.auth import AuthenticatedPrincipal, Principal
from careloop_kit.context import RequestContext, StepContext
from careloop_kit.problems import Conflict, Forbidden, NotFound
from careloop_kit.rows import values_of
from careloop_kit.service import Runtime

ADMIN_ROLE = "org_admin"


@dataclass(frozen=True)
class NewAccount:
    """A user account to create: staff (roles at locations) or a patient's portal login."""

    email: str
    display_name: str
    password: str
    roles: list[str] = field(default_factory=list)
    locations: list[str] | str = field(default_factory=list)
    patient_id: str | None = None


@dataclass(frozen=True)
class NewLocation:
    name: str
    time_zone: str
    address: dict[str, Any] | None = None
    sensitive: bool = False
    features: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class UserPage:
    items: list[StoredUser]
    next_after: str | None


AdminContext = RequestContext[IdentityRepository]
"""An administration request: its caller, transaction and identity's repository on it."""


async def _existing_org(repo: IdentityRepository, org_id: str) -> StoredOrganization:
    stored = await repo.get_organization(org_id)
    if stored is None:
        raise NotFound(f"No organization {org_id}.")
    return stored


def _sees_user(principal: AuthenticatedPrincipal, user: StoredUser) -> bool:
    """Whether a reader of users may see this account: everyone of the organization
    with every location in scope; otherwise only accounts working at a location in
    scope (never org-wide accounts nor patient portal accounts)."""
    if ALL_LOCATIONS in principal.locations:
        return True
    if ALL_LOCATIONS in user.locations or user.patient_id is not None:
        return False
    return any(principal.allows_location(loc) for loc in user.locations)


async def _checked_assignment(
    repo: IdentityRepository,
    org_id: str,
    roles: list[str],
    locations: list[str] | str,
    patient_id: str | None,
) -> Assignment:
    try:
        assignment = make_assignment(roles, locations, patient_id)
    except InvalidAssignment as exc:
        raise Invalid(str(exc)) from exc
    if assignment.locations != (ALL_LOCATIONS,):
        unknown = set(assignment.locations) - await repo.location_ids(org_id)
        if unknown:
            raise Invalid(f"Unknown locations in this organization: {sorted(unknown)}.")
    return assignment


async def _account_row(
    runtime: Runtime, org_id: str, new: NewAccount, assignment: Assignment
) -> dict[str, Any]:
    """The row of the account `new` with its checked `assignment`: the email normalised,
    the password checked and hashed."""
    email = new.email.strip().lower()
    try:
        check_password(new.password, email=email)
    except WeakPassword as exc:
        raise Invalid(str(exc)) from exc
    password_hash = await asyncio.to_thread(hasher_of(runtime).hash, new.password)
    now = runtime.clock.now()
    return {
        "id": str(uuid4()),
        "org_id": org_id,
        "email": email,
        "display_name": new.display_name,
        "password_hash": password_hash,
        "roles": list(assignment.roles),
        "locations": list(assignment.locations),
        "patient_id": assignment.patient_id,
        "failed_attempts": 0,
        "locked_until": None,
        "totp_secret_ct": None,
        "totp_enabled": False,
        "totp_last_step": None,
        "created_at": now,
        "updated_at": now,
    }


async def _add_user(repo: IdentityRepository, row: dict[str, Any]) -> StoredUser:
    """Store the account `row`; `Conflict` when its email is taken in the organization."""
    try:
        return await repo.add_user(row)
    except DuplicateEmail as exc:
        raise Conflict("A user with this email already exists in the organization.") from exc


def _user_entry(action: str, user_id: str, detail: str) -> AuditEntry:
    return identity_entry(action, "User", user_id, detail=detail)


# --- organizations ----------------------------------------------------------------


async def create_organization(
    runtime: Runtime,
    session: AsyncSession,
    name: str,
    admin: NewAccount | None,
    *,
    meta: RequestMeta,
) -> tuple[StoredOrganization, str | None]:
    """Create an organization (tenant), and optionally its first org admin (every
    location); returns the organization and the admin's id."""
    repo = IdentityRepository(session)
    org = await repo.add_organization(str(uuid4()), name, runtime.clock.now())
    if admin is None:
        return org, None
    row = await _account_row(
        runtime, org.id, admin, make_assignment([ADMIN_ROLE], ALL_LOCATIONS, None)
    )
    operator = Principal(actor_id=BOOTSTRAP_ACTOR, actor_type="system", org_id=org.id)
    step = StepContext(runtime, session, **meta)
    async with step.audited(operator, _user_entry("create", row["id"], "first org admin")):
        created = await _add_user(repo, row)
    return org, created.id


async def list_organizations(session: AsyncSession, limit: int) -> list[StoredOrganization]:
    """Every organization (the platform operator's view)."""
    return await IdentityRepository(session).list_organizations(limit)


async def read_organization(ctx: AdminContext, org_id: str) -> StoredOrganization:
    """The caller's own organization."""
    own_organization(ctx.principal, org_id)
    return await _existing_org(ctx.repos, org_id)


# --- locations ----------------------------------------------------------------------


def _location_state(stored: StoredLocation) -> dict[str, Any]:
    """The fields both location events carry (never the address: no one else needs it)."""
    leave_out = ("id", "address", "created_at")
    return {"location_id": stored.id, **values_of(stored, leave_out=leave_out)}


def _location_entry(action: str, location_id: str, detail: str | None = None) -> AuditEntry:
    return identity_entry(action, "Location", location_id, detail=detail)


async def _announce(ctx: AdminContext, event: LocationCreated | LocationChanged) -> None:
    """Publish a location's event, in the request's transaction."""
    await ctx.runtime.outbox.add(
        ctx.session, event, org_id=event.org_id, location_id=event.location_id
    )


async def create_location(ctx: AdminContext, org_id: str, new: NewLocation) -> StoredLocation:
    """Add a location to the organization (its time zone checked), announced."""
    runtime, principal, repo = ctx.runtime, ctx.principal, ctx.repos
    own_organization(principal, org_id)
    await _existing_org(repo, org_id)
    try:
        time_zone = validate_time_zone(new.time_zone)
    except InvalidTimeZone as exc:
        raise Invalid(str(exc)) from exc
    stored = StoredLocation(
        id=str(uuid4()),
        org_id=org_id,
        name=new.name,
        address=new.address,
        time_zone=time_zone,
        sensitive=new.sensitive,
        features=dict(new.features),
        created_at=runtime.clock.now(),
    )
    async with ctx.audited(_location_entry("create", stored.id)):
        await repo.add_location(stored)
        await _announce(
            ctx, LocationCreated(**_location_state(stored), occurred_at=stored.created_at)
        )
    return stored


async def list_locations(ctx: AdminContext, org_id: str) -> list[StoredLocation]:
    """The locations of the caller's organization."""
    own_organization(ctx.principal, org_id)
    repo = ctx.repos
    await _existing_org(repo, org_id)
    return await repo.list_locations(org_id)


async def update_location(
    ctx: AdminContext, org_id: str, location_id: str, changes: dict[str, Any]
) -> StoredLocation:
    """Change a location's fields (its zone checked); feature switches not named keep
    their value. A change is announced with the location's whole new state."""
    runtime, principal, repo = ctx.runtime, ctx.principal, ctx.repos
    own_organization(principal, org_id)
    stored = await repo.get_location(org_id, location_id, for_update=True)
    if stored is None:
        raise NotFound(f"No location {location_id} in this organization.")
    changes = dict(changes)
    if "time_zone" in changes:
        try:
            changes["time_zone"] = validate_time_zone(changes["time_zone"])
        except InvalidTimeZone as exc:
            raise Invalid(str(exc)) from exc
    if "features" in changes:
        changes["features"] = {**stored.features, **changes["features"]}
    if changes:
        detail = "changed: " + ", ".join(sorted(changes))
        async with ctx.audited(_location_entry("update", location_id, detail)):
            await repo.update_location(org_id, location_id, changes)
            changed = await repo.get_location(org_id, location_id)
            assert changed is not None
            # The row is locked since the read above, so the next change of this location
            # takes its time after this one's: `occurred_at` orders one location's events.
            await _announce(
                ctx, LocationChanged(**_location_state(changed), occurred_at=runtime.clock.now())
            )
    updated = await repo.get_location(org_id, location_id)
    assert updated is not None
    return updated


# --- users and roles ----------------------------------------------------------------


async def create_user(ctx: AdminContext, org_id: str, new: NewAccount) -> StoredUser:
    """Create a staff user or a patient portal account."""
    runtime, principal, repo = ctx.runtime, ctx.principal, ctx.repos
    own_organization(principal, org_id)
    await _existing_org(repo, org_id)
    assignment = await _checked_assignment(
        repo, org_id, list(new.roles), new.locations, new.patient_id
    )
    row = await _account_row(runtime, org_id, new, assignment)
    detail = f"roles {list(assignment.roles)}; locations {list(assignment.locations)}"
    async with ctx.audited(_user_entry("create", row["id"], detail)):
        return await _add_user(repo, row)


async def list_users(ctx: AdminContext, org_id: str, *, limit: int, after: str | None) -> UserPage:
    """The accounts the caller may see, in id order (page with `after`)."""
    principal, repo = ctx.principal, ctx.repos
    own_organization(principal, org_id)
    await _existing_org(repo, org_id)
    page = await repo.list_users(org_id, limit, after)
    visible = [u for u in page if _sees_user(principal, u)]
    return UserPage(items=visible, next_after=page[-1].id if len(page) == limit else None)


async def read_user(ctx: AdminContext, org_id: str, user_id: str) -> StoredUser:
    """One account in the caller's scope."""
    principal = ctx.principal
    own_organization(principal, org_id)
    stored = await ctx.repos.get_user(org_id, user_id)
    if stored is None or not _sees_user(principal, stored):
        raise NotFound(f"No user {user_id} in your scope.")
    return stored


async def _keeps_an_admin(
    repo: IdentityRepository, org_id: str, user: StoredUser, assignment: Assignment
) -> None:
    if ADMIN_ROLE not in user.roles or ADMIN_ROLE in assignment.roles:
        return
    if await repo.org_admin_ids(org_id) - {user.id}:
        return
    raise Conflict("This is the organization's last org admin: make another user org admin first.")


async def _end_sessions(runtime: Runtime, session: AsyncSession, user: StoredUser) -> int:
    ended = 0
    for login in await IdentityRepository(session).open_sessions_of(user.id):
        ended += await revoke_login(runtime, session, login, "admin")
    return ended


async def change_roles(
    ctx: AdminContext,
    org_id: str,
    user_id: str,
    *,
    roles: list[str],
    locations: list[str] | str,
    patient_id: str | None,
) -> StoredUser:
    """Replace a user's roles, location scope and patient link. The user's open sessions
    end (their tokens carry the old roles): the user signs in again."""
    runtime, session, principal, repo = ctx.runtime, ctx.session, ctx.principal, ctx.repos
    own_organization(principal, org_id)
    user = await repo.get_user(org_id, user_id, for_update=True)
    if user is None:
        raise NotFound(f"No user {user_id} in this organization.")
    assignment = await _checked_assignment(repo, org_id, list(roles), locations, patient_id)
    if ("patient" in user.roles) != ("patient" in assignment.roles):
        raise Forbidden(
            "A patient portal account and a staff account cannot be turned into each "
            "other: create a new account instead."
        )
    await _keeps_an_admin(repo, org_id, user, assignment)
    unchanged = (
        tuple(sorted(user.roles)) == assignment.roles
        and tuple(sorted(user.locations)) == assignment.locations
        and user.patient_id == assignment.patient_id
    )
    if not unchanged:
        # The full before/after is in the UserRolesChanged event; the audit record's
        # detail is short by contract.
        detail = short("roles -> " + ",".join(assignment.roles))
        async with ctx.audited(_user_entry("update", user.id, detail)):
            await repo.set_assignment(
                user.id,
                list(assignment.roles),
                list(assignment.locations),
                assignment.patient_id,
                runtime.clock.now(),
            )
            ended = await _end_sessions(runtime, session, user)
            await runtime.outbox.add(
                session,
                UserRolesChanged(
                    org_id=org_id,
                    user_id=user.id,
                    changed_by=principal.actor_id,
                    roles_before=sorted(user.roles),
                    roles_after=list(assignment.roles),
                    locations_before=sorted(user.locations),
                    locations_after=list(assignment.locations),
                    sessions_ended=ended,
                    changed_at=runtime.clock.now(),
                ),
                org_id=org_id,
            )
    updated = await repo.get_user(org_id, user_id)
    assert updated is not None
    return updated
