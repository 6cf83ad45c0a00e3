"""Organizations, locations and users (behind the bootstrap token for now)."""

from __future__ import annotations

import asyncio
from typing import Annotated
from uuid import uuid4

from fastapi import APIRouter, Query, Request, status

from careloop_identity.api.common import (
    BOOTSTRAP_ACTOR,
    BootstrapDep,
    Invalid,
    audit,
    hasher_of,
)
from careloop_identity.api.schemas import (
    LocationCreate,
    LocationPage,
    LocationRead,
    OrganizationCreate,
    OrganizationPage,
    OrganizationRead,
    UserCreate,
    UserRead,
)
from careloop_identity.domain.locations import InvalidTimeZone, validate_time_zone
from careloop_identity.domain.password import WeakPassword, check_password
from careloop_identity.domain.roles import ALL_LOCATIONS, InvalidAssignment, make_assignment
from careloop_identity.store.repository import (
    DuplicateEmail,
    IdentityRepository,
    StoredLocation,
    StoredOrganization,
    StoredUser,
)
from careloop_kit.auth import Principal
from careloop_kit.problems import Conflict, NotFound
from careloop_kit.service import RuntimeDep, SessionDep

router = APIRouter(prefix="/organizations", tags=["administration"])


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


async def _existing_org(repo: IdentityRepository, org_id: str) -> StoredOrganization:
    stored = await repo.get_organization(org_id)
    if stored is None:
        raise NotFound(f"No organization {org_id}.")
    return stored


@router.post("", status_code=status.HTTP_201_CREATED, response_model=OrganizationRead)
async def create_organization(
    body: OrganizationCreate, _: BootstrapDep, runtime: RuntimeDep, session: SessionDep
) -> OrganizationRead:
    """Create an organization (tenant)."""
    repo = IdentityRepository(session)
    return _org(await repo.add_organization(str(uuid4()), body.name, runtime.clock.now()))


@router.get("", response_model=OrganizationPage)
async def list_organizations(
    _: BootstrapDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> OrganizationPage:
    """List organizations."""
    repo = IdentityRepository(session)
    return OrganizationPage(items=[_org(o) for o in await repo.list_organizations(limit)])


@router.get("/{org_id}", response_model=OrganizationRead)
async def read_organization(org_id: str, _: BootstrapDep, session: SessionDep) -> OrganizationRead:
    """Read one organization."""
    return _org(await _existing_org(IdentityRepository(session), org_id))


@router.post(
    "/{org_id}/locations", status_code=status.HTTP_201_CREATED, response_model=LocationRead
)
async def create_location(
    org_id: str,
    body: LocationCreate,
    _: BootstrapDep,
    runtime: RuntimeDep,
    session: SessionDep,
) -> LocationRead:
    """Add a location to an organization."""
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
    return _location(await repo.add_location(stored))


@router.get("/{org_id}/locations", response_model=LocationPage)
async def list_locations(org_id: str, _: BootstrapDep, session: SessionDep) -> LocationPage:
    """List the locations of an organization."""
    repo = IdentityRepository(session)
    await _existing_org(repo, org_id)
    return LocationPage(items=[_location(loc) for loc in await repo.list_locations(org_id)])


@router.post("/{org_id}/users", status_code=status.HTTP_201_CREATED, response_model=UserRead)
async def create_user(
    org_id: str,
    body: UserCreate,
    request: Request,
    _: BootstrapDep,
    runtime: RuntimeDep,
    session: SessionDep,
) -> UserRead:
    """Create a staff user or a patient portal account."""
    repo = IdentityRepository(session)
    await _existing_org(repo, org_id)
    email = str(body.email).strip().lower()
    try:
        check_password(body.password, email=email)
        assignment = make_assignment(body.roles, body.locations, body.patient_id)
    except (WeakPassword, InvalidAssignment) as exc:
        raise Invalid(str(exc)) from exc
    if assignment.locations != (ALL_LOCATIONS,):
        unknown = set(assignment.locations) - await repo.location_ids(org_id)
        if unknown:
            raise Invalid(f"Unknown locations in this organization: {sorted(unknown)}.")
    password_hash = await asyncio.to_thread(hasher_of(runtime).hash, body.password)
    now = runtime.clock.now()
    user_id = str(uuid4())
    try:
        stored = await repo.add_user(
            {
                "id": user_id,
                "org_id": org_id,
                "email": email,
                "display_name": body.display_name,
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
    await audit(
        runtime,
        session,
        request,
        Principal(actor_id=BOOTSTRAP_ACTOR, actor_type="system", org_id=org_id),
        action="create",
        resource_type="User",
        resource_id=user_id,
    )
    return _user(stored)


@router.get("/{org_id}/users/{user_id}", response_model=UserRead)
async def read_user(org_id: str, user_id: str, _: BootstrapDep, session: SessionDep) -> UserRead:
    """Read one user (never the password hash or TOTP secret)."""
    stored = await IdentityRepository(session).get_user(org_id, user_id)
    if stored is None:
        raise NotFound(f"No user {user_id} in this organization.")
    return _user(stored)
