"""Scheduling's view of locations (read-only: identity owns them), providers,
appointment types, weekly availability, closures and open slots.

The catalog holds no PHI, so anyone holding `scheduling:read` in the organization may
read all of it (a patient self-scheduling must see every location's slots). Changes
need `scheduling:manage` and, for anything tied to a location, that location in scope.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, status

from careloop_kit.auth import AuthenticatedPrincipal
from careloop_kit.problems import NotFound
from careloop_kit.repository import new_id
from careloop_kit.service import RuntimeDep
from careloop_scheduling.api.common import Manager, Reader, ReposDep
from careloop_scheduling.api.schemas import (
    AppointmentTypeCreate,
    AppointmentTypePage,
    AppointmentTypeRead,
    AvailabilityCreate,
    AvailabilityRead,
    ClosureCreate,
    ClosureRead,
    LocationRead,
    ProviderCreate,
    ProviderPage,
    ProviderRead,
    ProviderSchedule,
    SlotPage,
    SlotRead,
)
from careloop_scheduling.domain.availability import Closure, InvalidSchedule, WeeklyWindow
from careloop_scheduling.domain.catalog import AppointmentType, Provider, time_zone
from careloop_scheduling.usecases.catalog import load_provider, load_type, zone_of
from careloop_scheduling.usecases.common import InvalidScheduling, settings_of
from careloop_scheduling.usecases.slots import compute_slots, notice

router = APIRouter(tags=["scheduling catalog"])


# The responses carry the records' fields one for one (tuples become lists).
def _provider_read(p: Provider) -> ProviderRead:
    return ProviderRead.model_validate(p, from_attributes=True)


def _type_read(t: AppointmentType) -> AppointmentTypeRead:
    return AppointmentTypeRead.model_validate(t, from_attributes=True)


def _window_read(window_id: str, w: WeeklyWindow) -> AvailabilityRead:
    return AvailabilityRead(id=window_id, **asdict(w))


def _scope_all(principal: AuthenticatedPrincipal, location_ids: list[str]) -> None:
    for location_id in location_ids:
        principal.can_access_location(location_id)


@router.get("/locations/{location_id}", response_model=LocationRead)
async def read_location(location_id: str, principal: Reader, repos: ReposDep) -> LocationRead:
    """Read scheduling's view of a location (kept from identity's location events)."""
    where = await repos.locations.get(principal.org_id, location_id)
    if where is None:
        raise NotFound(f"Scheduling has not heard of location {location_id} from identity yet.")
    return LocationRead(
        location_id=where.id,
        time_zone=where.time_zone,
        display_name=where.display_name,
        sensitive=where.sensitive,
        features=dict(where.features),
        changed_at=await repos.locations.changed_at(principal.org_id, location_id),
    )


@router.post("/providers", status_code=status.HTTP_201_CREATED, response_model=ProviderRead)
async def create_provider(
    body: ProviderCreate, principal: Manager, runtime: RuntimeDep, repos: ReposDep
) -> ProviderRead:
    """Add a provider who sees patients at the given locations."""
    _scope_all(principal, body.location_ids)
    item = Provider(
        id=new_id(),
        org_id=principal.org_id,
        display_name=body.display_name.strip(),
        location_ids=tuple(dict.fromkeys(body.location_ids)),
    )
    await repos.catalog.add_provider(item, runtime.clock.now())
    return _provider_read(item)


@router.get("/providers", response_model=ProviderPage)
async def list_providers(
    principal: Reader, repos: ReposDep, location_id: str | None = None
) -> ProviderPage:
    """List the organization's active providers (optionally of one location)."""
    items = await repos.catalog.list_providers(principal.org_id, location_id)
    return ProviderPage(items=[_provider_read(p) for p in items], count=len(items))


@router.get("/providers/{provider_id}", response_model=ProviderRead)
async def read_provider(provider_id: str, principal: Reader, repos: ReposDep) -> ProviderRead:
    """Read one provider."""
    return _provider_read(await load_provider(repos, principal.org_id, provider_id))


@router.post(
    "/appointment-types", status_code=status.HTTP_201_CREATED, response_model=AppointmentTypeRead
)
async def create_type(
    body: AppointmentTypeCreate, principal: Manager, runtime: RuntimeDep, repos: ReposDep
) -> AppointmentTypeRead:
    """Add an appointment type to the organization's catalogue."""
    item = AppointmentType(
        id=new_id(),
        org_id=principal.org_id,
        name=body.name.strip(),
        duration_minutes=body.duration_minutes,
        visit_category=body.visit_category,
        patient_kind=body.patient_kind,
    )
    await repos.catalog.add_type(item, runtime.clock.now())
    return _type_read(item)


@router.get("/appointment-types", response_model=AppointmentTypePage)
async def list_types(principal: Reader, repos: ReposDep) -> AppointmentTypePage:
    """List the organization's active appointment types."""
    items = await repos.catalog.list_types(principal.org_id)
    return AppointmentTypePage(items=[_type_read(t) for t in items], count=len(items))


@router.post(
    "/providers/{provider_id}/availability",
    status_code=status.HTTP_201_CREATED,
    response_model=AvailabilityRead,
)
async def add_availability(
    provider_id: str,
    body: AvailabilityCreate,
    principal: Manager,
    runtime: RuntimeDep,
    repos: ReposDep,
) -> AvailabilityRead:
    """Add a weekly window (local time at the location) to a provider's template."""
    found = await load_provider(repos, principal.org_id, provider_id)
    principal.can_access_location(body.location_id)
    if not found.works_at(body.location_id):
        raise InvalidScheduling(f"Provider {provider_id} does not work at {body.location_id}.")
    await zone_of(repos, principal.org_id, body.location_id)
    try:
        window = WeeklyWindow(provider_id, body.location_id, body.weekday, body.start, body.end)
    except InvalidSchedule as exc:
        raise InvalidScheduling(str(exc)) from exc
    window_id = await repos.catalog.add_window(principal.org_id, window, runtime.clock.now())
    return _window_read(window_id, window)


@router.get("/providers/{provider_id}/availability", response_model=ProviderSchedule)
async def read_availability(
    provider_id: str, principal: Reader, repos: ReposDep
) -> ProviderSchedule:
    """A provider's weekly template, every location."""
    await load_provider(repos, principal.org_id, provider_id)
    windows = await repos.catalog.provider_windows(principal.org_id, provider_id)
    return ProviderSchedule(
        provider_id=provider_id, windows=[_window_read(w.id, w.window) for w in windows]
    )


@router.post(
    "/providers/{provider_id}/exceptions",
    status_code=status.HTTP_201_CREATED,
    response_model=ClosureRead,
)
async def add_exception(
    provider_id: str,
    body: ClosureCreate,
    principal: Manager,
    runtime: RuntimeDep,
    repos: ReposDep,
) -> ClosureRead:
    """Close dates for a provider: one location (holiday) or all of them (leave)."""
    found = await load_provider(repos, principal.org_id, provider_id)
    # Leave closes every location the provider works at: all of them must be in scope.
    _scope_all(principal, [body.location_id] if body.location_id else list(found.location_ids))
    try:
        closure = Closure(provider_id, body.first_day, body.last_day, body.location_id)
    except InvalidSchedule as exc:
        raise InvalidScheduling(str(exc)) from exc
    closure_id = await repos.catalog.add_closure(
        principal.org_id, closure, body.reason, runtime.clock.now()
    )
    return ClosureRead(
        id=closure_id,
        provider_id=provider_id,
        location_id=body.location_id,
        first_day=body.first_day,
        last_day=body.last_day,
        reason=body.reason,
    )


@router.get("/slots", response_model=SlotPage)
async def list_slots(
    principal: Reader,
    runtime: RuntimeDep,
    repos: ReposDep,
    appointment_type_id: str,
    location_id: str,
    from_: Annotated[datetime, Query(alias="from")],
    to: datetime,
    provider_id: str | None = None,
) -> SlotPage:
    """Open slots of one appointment type at one location (optionally one provider)."""
    settings = settings_of(runtime)
    kind = await load_type(repos, principal.org_id, appointment_type_id)
    zone_name = await zone_of(repos, principal.org_id, location_id)
    if provider_id is not None:
        await load_provider(repos, principal.org_id, provider_id)
    slots = await compute_slots(
        repos,
        principal.org_id,
        location_id=location_id,
        zone_name=zone_name,
        kind=kind,
        provider_ids=None if provider_id is None else [provider_id],
        start=from_,
        end=to,
        not_before=runtime.clock.now() + notice(settings),
    )
    limit = settings.max_slot_results
    zone = time_zone(zone_name)
    items = [
        SlotRead(**asdict(s), local_start=s.start_at.astimezone(zone).isoformat())
        for s in slots[:limit]
    ]
    return SlotPage(items=items, count=len(items), time_zone=zone_name)
