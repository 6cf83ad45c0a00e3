"""Open slots: computed from the stored templates, closures and bookings, and the one
check every booking path makes that a wanted time lies on the provider's grid."""

from __future__ import annotations

from datetime import datetime, timedelta

from careloop_kit.service import Runtime
from careloop_scheduling.domain.availability import Busy, InvalidSchedule, Slot, open_slots
from careloop_scheduling.domain.catalog import AppointmentType, time_zone
from careloop_scheduling.settings import SchedulingSettings
from careloop_scheduling.store.repository import Repositories
from careloop_scheduling.usecases.catalog import load_provider, load_type, zone_of
from careloop_scheduling.usecases.common import InvalidScheduling, settings_of


def notice(settings: SchedulingSettings) -> timedelta:
    """How far ahead of now a slot must start to be offered or booked."""
    return timedelta(minutes=settings.min_booking_notice_minutes)


async def compute_slots(
    repos: Repositories,
    org_id: str,
    *,
    location_id: str,
    zone_name: str,
    kind: AppointmentType,
    provider_ids: list[str] | None,
    start: datetime,
    end: datetime,
    not_before: datetime | None,
    ignore_busy: bool = False,
) -> list[Slot]:
    """Open slots from the stored templates, closures and bookings."""
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidScheduling("`from` and `to` need a UTC offset, e.g. 2030-01-07T00:00:00Z.")
    windows = [w.window for w in await repos.catalog.windows(org_id, location_id, provider_ids)]
    providers = sorted({w.provider_id for w in windows})
    zone = time_zone(zone_name)
    # Closures are stored in local dates: widen the UTC range by a day on each side.
    first = (start - timedelta(days=1)).date()
    last = (end + timedelta(days=1)).date()
    closures = [c.closure for c in await repos.catalog.closures(org_id, providers, first, last)]
    busy: list[Busy] = (
        [] if ignore_busy else await repos.appointments.busy(org_id, providers, start, end)
    )
    try:
        return open_slots(
            windows=windows,
            closures=closures,
            busy=busy,
            zone=zone,
            duration=kind.duration,
            start=start,
            end=end,
            not_before=not_before,
        )
    except InvalidSchedule as exc:
        raise InvalidScheduling(str(exc)) from exc


async def bookable_slot(
    repos: Repositories,
    runtime: Runtime,
    org_id: str,
    *,
    provider_id: str,
    location_id: str,
    type_id: str,
    start_at: datetime,
) -> Slot:
    """The slot starting at `start_at`, if it lies on the provider's grid and ahead of now.

    Whether it is still free is left to the database (the exclusion constraint), which
    alone can decide between two concurrent bookings."""
    provider = await load_provider(repos, org_id, provider_id)
    kind = await load_type(repos, org_id, type_id)
    if not kind.active:
        raise InvalidScheduling(f"Appointment type {type_id} is retired.")
    if not provider.works_at(location_id):
        raise InvalidScheduling(f"Provider {provider_id} does not work at {location_id}.")
    zone_name = await zone_of(repos, org_id, location_id)
    end_at = start_at + kind.duration
    wanted = Slot(provider_id, location_id, start_at, end_at)
    grid = await compute_slots(
        repos,
        org_id,
        location_id=location_id,
        zone_name=zone_name,
        kind=kind,
        provider_ids=[provider_id],
        start=start_at,
        end=end_at,
        not_before=runtime.clock.now() + notice(settings_of(runtime)),
        ignore_busy=True,
    )
    if wanted not in grid:
        raise InvalidScheduling(
            "That time is not an open slot of this provider: ask GET /slots for the grid."
        )
    return wanted
