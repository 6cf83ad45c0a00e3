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

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status

from careloop_identity.api.common import BootstrapDep
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
from careloop_identity.store.repository import (
    IdentityRepository,
    StoredLocation,
    StoredOrganization,
    StoredUser,
)
from careloop_identity.usecases import admin as steps
from careloop_kit.audit import request_meta
from careloop_kit.auth import require
from careloop_kit.context import request_context
from careloop_kit.service import RuntimeDep, SessionDep

router = APIRouter(prefix="/organizations", tags=["administration"])


ReadLocations = Annotated[
    steps.AdminContext,
    Depends(request_context(require("locations:read"), IdentityRepository)),
]
ManageLocations = Annotated[
    steps.AdminContext,
    Depends(request_context(require("locations:manage", mfa=True), IdentityRepository)),
]
ReadUsers = Annotated[
    steps.AdminContext,
    Depends(request_context(require("users:read", mfa=True), IdentityRepository)),
]
ManageUsers = Annotated[
    steps.AdminContext,
    Depends(request_context(require("users:manage", mfa=True), IdentityRepository)),
]


def _org(stored: StoredOrganization) -> OrganizationRead:
    return OrganizationRead.model_validate(stored, from_attributes=True)


def _location(stored: StoredLocation) -> LocationRead:
    return LocationRead.model_validate(stored, from_attributes=True)


def _user(stored: StoredUser) -> UserRead:
    return UserRead.model_validate(stored, from_attributes=True)


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
    admin = None if body.admin is None else steps.NewAccount(**body.admin.model_dump())
    org, admin_id = await steps.create_organization(
        runtime, session, body.name, admin, meta=request_meta(request)
    )
    return OrganizationCreated(**_org(org).model_dump(), admin_user_id=admin_id)


@router.get("", response_model=OrganizationPage)
async def list_organizations(
    _: BootstrapDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> OrganizationPage:
    """List organizations (platform operator)."""
    return OrganizationPage(items=[_org(o) for o in await steps.list_organizations(session, limit)])


@router.get("/{org_id}", response_model=OrganizationRead)
async def read_organization(org_id: str, ctx: ReadLocations) -> OrganizationRead:
    """Read the caller's own organization."""
    return _org(await steps.read_organization(ctx, org_id))


# --- locations ----------------------------------------------------------------------


@router.post(
    "/{org_id}/locations", status_code=status.HTTP_201_CREATED, response_model=LocationRead
)
async def create_location(
    org_id: str,
    body: LocationCreate,
    ctx: ManageLocations,
) -> LocationRead:
    """Add a location to the organization."""
    stored = await steps.create_location(ctx, org_id, steps.NewLocation(**body.model_dump()))
    return _location(stored)


@router.get("/{org_id}/locations", response_model=LocationPage)
async def list_locations(org_id: str, ctx: ReadLocations) -> LocationPage:
    """List the locations of the organization."""
    locations = await steps.list_locations(ctx, org_id)
    return LocationPage(items=[_location(loc) for loc in locations])


@router.patch("/{org_id}/locations/{location_id}", response_model=LocationRead)
async def update_location(
    org_id: str,
    location_id: str,
    body: LocationUpdate,
    ctx: ManageLocations,
) -> LocationRead:
    """Rename a location, change its address, zone or sensitivity, or switch features on
    and off (a location can go live with reminders first and add workflows later)."""
    changes: dict[str, Any] = body.model_dump(exclude_unset=True, exclude_none=True)
    updated = await steps.update_location(ctx, org_id, location_id, changes)
    return _location(updated)


# --- users and roles ----------------------------------------------------------------


@router.post("/{org_id}/users", status_code=status.HTTP_201_CREATED, response_model=UserRead)
async def create_user(
    org_id: str,
    body: UserCreate,
    ctx: ManageUsers,
) -> UserRead:
    """Create a staff user or a patient portal account."""
    stored = await steps.create_user(ctx, org_id, steps.NewAccount(**body.model_dump()))
    return _user(stored)


@router.get("/{org_id}/users", response_model=UserPage)
async def list_users(
    org_id: str,
    ctx: ReadUsers,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> UserPage:
    """List the accounts the caller may see, in id order (page with `after`)."""
    page = await steps.list_users(ctx, org_id, limit=limit, after=after)
    return UserPage(items=[_user(u) for u in page.items], next_after=page.next_after)


@router.get("/{org_id}/users/{user_id}", response_model=UserRead)
async def read_user(org_id: str, user_id: str, ctx: ReadUsers) -> UserRead:
    """Read one account (never the password hash or TOTP secret)."""
    return _user(await steps.read_user(ctx, org_id, user_id))


@router.put("/{org_id}/users/{user_id}/roles", response_model=UserRead)
async def change_roles(
    org_id: str,
    user_id: str,
    body: UserAssignment,
    ctx: ManageUsers,
) -> UserRead:
    """Replace a user's roles, location scope and patient link. The user's open sessions
    end (their tokens carry the old roles): the user signs in again."""
    updated = await steps.change_roles(
        ctx,
        org_id,
        user_id,
        roles=list(body.roles),
        locations=body.locations,
        patient_id=body.patient_id,
    )
    return _user(updated)
