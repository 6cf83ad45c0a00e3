"""The one way to reach scheduling's tables: `repositories(session)`, one repository
per aggregate, all on the caller's session. Repositories never commit: the request,
event or timer boundary does."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_scheduling.store.appointments import AppointmentRepository
from careloop_scheduling.store.catalog import CatalogRepository
from careloop_scheduling.store.locations import LocationRepository
from careloop_scheduling.store.reminder_settings import ReminderSettingsRepository
from careloop_scheduling.store.reschedule_offers import RescheduleOfferRepository
from careloop_scheduling.store.timers import TimerRepository
from careloop_scheduling.store.waitlist import WaitlistRepository


@dataclass(frozen=True)
class Repositories:
    """Scheduling's repositories, one per aggregate, sharing one session."""

    appointments: AppointmentRepository
    catalog: CatalogRepository
    locations: LocationRepository
    reminder_settings: ReminderSettingsRepository
    timers: TimerRepository
    reschedule_offers: RescheduleOfferRepository
    waitlist: WaitlistRepository


def repositories(session: AsyncSession) -> Repositories:
    """Every repository on the caller's session (and so in its transaction)."""
    return Repositories(
        appointments=AppointmentRepository(session),
        catalog=CatalogRepository(session),
        locations=LocationRepository(session),
        reminder_settings=ReminderSettingsRepository(session),
        timers=TimerRepository(session),
        reschedule_offers=RescheduleOfferRepository(session),
        waitlist=WaitlistRepository(session),
    )
