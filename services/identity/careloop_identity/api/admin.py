"""Organizations, locations, users and their roles.

Creating an organization (a tenant) is the platform operator's act: it takes the
bootstrap token and may create the organization's first org admin. Everything inside
an organization is done with an access token of that organization, checked by the
kit's `require()` against the permission table like in every other service: managing
locations, users and roles needs `locations:manage` / `users:manage` with a second
factor; reading needs `locations:read` / `users:read`. A location manager sees only
the accounts of locations in its scope.

A role change ends the user's open sessions (their tokens carry the old roles) and is
audited with the old and new assignment; the last org admin cannot be demoted, so an
organization never locks itself out of its own administration.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from uuid import uuid4

from fastapi import APIRouter, Depends, Query, Request, status
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.identity import UserRolesChanged
from careloop_identity.api.common import (
    BOOTSTRAP_ACTOR,
    BootstrapDep,
    Invalid,
    audit,
    hasher_of,
    own_organization,
    revoke_login,
)
from careloop_identity.api.schemas import (
    LocationCreate,
    LocationPage,
    LocationRead,
    LocationUpdate,
    OrganizationCreate,
    OrganizationCreated,
    OrganizationPage,
    OrganizationRead,
    UserAssignment,
    UserCreate,
    UserPage,
    UserRead,
)
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
from careloop_kit.auth import AuthenticatedPrincipal, Principal, require
from careloop_kit.problems import Conflict, Forbidden, NotFound
from careloop_kit.service import Runtime, RuntimeDep, SessionDep

router = APIRouter(prefix="/organizations", tags=["administration"])

ReadLocations = Annotated[AuthenticatedPrincipal, Depends(require("locations:read"))]
ManageLocations = Annotated[AuthenticatedPrincipal, Depends(require("locations:manage", mfa=True))]
ReadUsers = Annotated[AuthenticatedPrincipal, Depends(require("users:read", mfa=True))]
ManageUsers = Annotated[AuthenticatedPrincipal, Depends(require("users:manage", mfa=True))]

ADMIN_ROLE = "org_admin"


def _org(stored: StoredOrganization) -> OrganizationRead:
    return OrganizationRead(id=stored.id, name=stored.name, created_at=stored.created_at)


def _location(stored: StoredLocation) -> LocationRead:
    return LocationRead(
        id=stored.id,
        org_id=stored.org_id,
        name=stored.name,
        address=stored.address,
        time_zone=stored.time_zone,
        sensitive=stored.sensitive,
        features=stored.features,
        created_at=stored.created_at,
    )


def _user(stored: StoredUser) -> UserRead:
    return UserRead(
        id=stored.id,
        org_id=stored.org_id,
        email=stored.email,
        display_name=stored.display_name,
        roles=list(stored.roles),
        locations=list(stored.locations),
        patient_id=stored.patient_id,
        mfa_enabled=stored.totp_enabled,
        created_at=stored.created_at,
    )


def _short(text: str, limit: int = 128) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


async def _add_user(
    runtime: Runtime,
    repo: IdentityRepository,
    org_id: str,
    *,
    email: str,
    display_name: str,
    password: str,
    assignment: Assignment,
) -> StoredUser:
    try:
        check_password(password, email=email)
    except WeakPassword as exc:
        raise Invalid(str(exc)) from exc
    password_hash = await asyncio.to_thread(hasher_of(runtime).hash, password)
    now = runtime.clock.now()
    try:
        return await repo.add_user(
            {
                "id": str(uuid4()),
                "org_id": org_id,
                "email": email,
                "display_name": display_name,
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
        )
    except DuplicateEmail as exc:
        raise Conflict("A user with this email already exists in the organization.") from exc


# --- organizations (the platform operator, with the bootstrap token) ---------------


@router.post("", status_code=status.HTTP_201_CREATED, response_model=OrganizationCreated)
async def create_organization(
    body: OrganizationCreate,
    request: Request,
    _: BootstrapDep,
    runtime: RuntimeDep,
    session: SessionDep,
) -> OrganizationCreated:
    """Create an organization (tenant), and optionally its first org admin."""
    repo = IdentityRepository(session)
    org = await repo.add_organization(str(uuid4()), body.name, runtime.clock.now())
    admin_id = None
    if body.admin is not None:
        admin = await _add_user(
            runtime,
            repo,
            org.id,
            email=str(body.admin.email).strip().lower(),
            display_name=body.admin.display_name,
            password=body.admin.password,
            assignment=make_assignment([ADMIN_ROLE], ALL_LOCATIONS, None),
        )
        admin_id = admin.id
        await audit(
            runtime,
            session,
            request,
            Principal(actor_id=BOOTSTRAP_ACTOR, actor_type="system", org_id=org.id),
            action="create",
            resource_type="User",
            resource_id=admin.id,
            detail="first org admin",
        )
    return OrganizationCreated(**_org(org).model_dump(), admin_user_id=admin_id)


@router.get("", response_model=OrganizationPage)
async def list_organizations(
    _: BootstrapDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> OrganizationPage:
    """List organizations (platform operator)."""
    repo = IdentityRepository(session)
    return OrganizationPage(items=[_org(o) for o in await repo.list_organizations(limit)])


@router.get("/{org_id}", response_model=OrganizationRead)
async def read_organization(
    org_id: str, principal: ReadLocations, session: SessionDep
) -> OrganizationRead:
    """Read the caller's own organization."""
    own_organization(principal, org_id)
    return _org(await _existing_org(IdentityRepository(session), org_id))


# --- locations ----------------------------------------------------------------------


@router.post(
    "/{org_id}/locations", status_code=status.HTTP_201_CREATED, response_model=LocationRead
)
async def create_location(
    org_id: str,
    body: LocationCreate,
    request: Request,
    principal: ManageLocations,
    runtime: RuntimeDep,
    session: SessionDep,
) -> LocationRead:
    """Add a location to the organization."""
    own_organization(principal, org_id)
    repo = IdentityRepository(session)
    await _existing_org(repo, org_id)
    try:
        time_zone = validate_time_zone(body.time_zone)
    except InvalidTimeZone as exc:
        raise Invalid(str(exc)) from exc
    stored = StoredLocation(
        id=str(uuid4()),
        org_id=org_id,
        name=body.name,
        address=None if body.address is None else body.address.model_dump(),
        time_zone=time_zone,
        sensitive=body.sensitive,
        features=dict(body.features),
        created_at=runtime.clock.now(),
    )
    await repo.add_location(stored)
    await audit(
        runtime,
        session,
        request,
        principal,
        action="create",
        resource_type="Location",
        resource_id=stored.id,
    )
    return _location(stored)


@router.get("/{org_id}/locations", response_model=LocationPage)
async def list_locations(
    org_id: str, principal: ReadLocations, session: SessionDep
) -> LocationPage:
    """List the locations of the organization."""
    own_organization(principal, org_id)
    repo = IdentityRepository(session)
    await _existing_org(repo, org_id)
    return LocationPage(items=[_location(loc) for loc in await repo.list_locations(org_id)])


@router.patch("/{org_id}/locations/{location_id}", response_model=LocationRead)
async def update_location(
    org_id: str,
    location_id: str,
    body: LocationUpdate,
    request: Request,
    principal: ManageLocations,
    runtime: RuntimeDep,
    session: SessionDep,
) -> LocationRead:
    """Rename a location, change its address or sensitivity, or switch features on and
    off (a location can go live with reminders first and add workflows later)."""
    own_organization(principal, org_id)
    repo = IdentityRepository(session)
    stored = await repo.get_location(org_id, location_id, for_update=True)
    if stored is None:
        raise NotFound(f"No location {location_id} in this organization.")
    changes: dict[str, Any] = body.model_dump(exclude_unset=True, exclude_none=True)
    if "features" in changes:
        changes["features"] = {**stored.features, **changes["features"]}
    if changes:
        await repo.update_location(org_id, location_id, changes)
        await audit(
            runtime,
            session,
            request,
            principal,
            action="update",
            resource_type="Location",
            resource_id=location_id,
            detail="changed: " + ", ".join(sorted(changes)),
        )
    updated = await repo.get_location(org_id, location_id)
    assert updated is not None
    return _location(updated)


# --- users and roles ----------------------------------------------------------------


@router.post("/{org_id}/users", status_code=status.HTTP_201_CREATED, response_model=UserRead)
async def create_user(
    org_id: str,
    body: UserCreate,
    request: Request,
    principal: ManageUsers,
    runtime: RuntimeDep,
    session: SessionDep,
) -> UserRead:
    """Create a staff user or a patient portal account."""
    own_organization(principal, org_id)
    repo = IdentityRepository(session)
    await _existing_org(repo, org_id)
    assignment = await _checked_assignment(
        repo, org_id, list(body.roles), body.locations, body.patient_id
    )
    stored = await _add_user(
        runtime,
        repo,
        org_id,
        email=str(body.email).strip().lower(),
        display_name=body.display_name,
        password=body.password,
        assignment=assignment,
    )
    await audit(
        runtime,
        session,
        request,
        principal,
        action="create",
        resource_type="User",
        resource_id=stored.id,
        detail=f"roles {list(stored.roles)}; locations {list(stored.locations)}",
    )
    return _user(stored)


@router.get("/{org_id}/users", response_model=UserPage)
async def list_users(
    org_id: str,
    principal: ReadUsers,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> UserPage:
    """List the accounts the caller may see, in id order (page with `after`)."""
    own_organization(principal, org_id)
    repo = IdentityRepository(session)
    await _existing_org(repo, org_id)
    page = await repo.list_users(org_id, limit, after)
    visible = [_user(u) for u in page if _sees_user(principal, u)]
    next_after = page[-1].id if len(page) == limit else None
    return UserPage(items=visible, next_after=next_after)


@router.get("/{org_id}/users/{user_id}", response_model=UserRead)
async def read_user(
    org_id: str, user_id: str, principal: ReadUsers, session: SessionDep
) -> UserRead:
    """Read one account (never the password hash or TOTP secret)."""
    own_organization(principal, org_id)
    stored = await IdentityRepository(session).get_user(org_id, user_id)
    if stored is None or not _sees_user(principal, stored):
        raise NotFound(f"No user {user_id} in your scope.")
    return _user(stored)


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


@router.put("/{org_id}/users/{user_id}/roles", response_model=UserRead)
async def change_roles(
    org_id: str,
    user_id: str,
    body: UserAssignment,
    request: Request,
    principal: ManageUsers,
    runtime: RuntimeDep,
    session: SessionDep,
) -> UserRead:
    """Replace a user's roles, location scope and patient link. The user's open sessions
    end (their tokens carry the old roles): the user signs in again."""
    own_organization(principal, org_id)
    repo = IdentityRepository(session)
    user = await repo.get_user(org_id, user_id, for_update=True)
    if user is None:
        raise NotFound(f"No user {user_id} in this organization.")
    assignment = await _checked_assignment(
        repo, org_id, list(body.roles), body.locations, body.patient_id
    )
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
        await audit(
            runtime,
            session,
            request,
            principal,
            action="update",
            resource_type="User",
            resource_id=user.id,
            # The full before/after is in the UserRolesChanged event; the audit
            # record's detail is short by contract.
            detail=_short("roles -> " + ",".join(assignment.roles)),
        )
    updated = await repo.get_user(org_id, user_id)
    assert updated is not None
    return _user(updated)
