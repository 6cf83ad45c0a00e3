"""Reminder sequences on durable timers: planned at booking, sent when due.

The booking (or reschedule) plans the appointment's touches with
`domain.reminders.plan` and schedules one kit timer per touch in the booking's own
transaction, keyed by the touch key, so the timers exist exactly when the
appointment does. Cancel, reschedule, check-in, no-show and fulfilment cancel the
appointment's pending timers in their transaction (`usecases.timers`, which also ends
the no-show check of `usecases.no_show`). A confirmation keeps them: the
"1 day before" reminder still tells a confirmed patient when and where to come, and
messaging may word it differently from the fields it already has.

A location whose `reminders` feature switch (identity's, see `usecases.locations`) is
off plans no touches, and touches planned before the switch went off send nothing.

When a timer fires, `ReminderDue` goes into the outbox in the timer's transaction:
the kit commits the fired mark and the outbox row together, so a crash can neither
lose the reminder nor send it twice. The kit fires a batch of timers per transaction,
so a location read once serves the rest of the batch.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import ReminderDue
from careloop_kit.db.timers import Timers
from careloop_kit.service import Runtime
from careloop_scheduling.domain.appointment import Appointment
from careloop_scheduling.domain.reminder_settings import (
    REMINDABLE_STATUSES,
    TIMER_KIND,
    Level,
    effective,
)
from careloop_scheduling.domain.reminders import PlannedTouch, plan
from careloop_scheduling.settings import SchedulingSettings
from careloop_scheduling.store.locations import LocationInfo
from careloop_scheduling.store.repository import Repositories, repositories
from careloop_scheduling.usecases.common import Work

log = logging.getLogger(__name__)

_LOCATIONS_INFO_KEY = "careloop_scheduling.reminder_locations"


async def schedule_reminders(
    timers: Timers,
    session: AsyncSession,
    repos: Repositories,
    appt: Appointment,
    *,
    time_zone: str,
    now: datetime,
) -> list[PlannedTouch]:
    """Plan the appointment's touches and schedule one timer each, in the caller's
    transaction. Preferences are left to messaging, which knows the patient's channels
    and opt-outs; scheduling only decides when. A location whose `reminders` switch is
    off plans none."""
    where = await repos.locations.get(appt.org_id, appt.location_id)
    if where is not None and not where.runs("reminders"):
        log.info("reminders of %s not planned: switched off at its location", appt.id)
        return []
    org = await repos.reminder_settings.get(appt.org_id, Level.ORGANIZATION)
    at_location = await repos.reminder_settings.get(appt.org_id, Level.LOCATION, appt.location_id)
    for_type = await repos.reminder_settings.get(
        appt.org_id, Level.APPOINTMENT_TYPE, appt.appointment_type_id
    )
    sequence, quiet = effective(org, at_location, for_type)
    touches = plan(appt.id, appt.start_at, now, time_zone, sequence, quiet)
    for touch in touches:
        await timers.schedule(
            session,
            TIMER_KIND,
            touch.fire_at,
            {
                "org_id": appt.org_id,
                "appointment_id": appt.id,
                "touch": touch.touch_name,
                "touch_key": touch.key,
            },
            dedup_key=touch.key,
        )
    return touches


def practice_name_of(where: LocationInfo, settings: SchedulingSettings) -> str:
    """The name patient messages about this location are signed with: neutral for a
    sensitive location (the name alone could disclose the kind of care) or one without
    a display name."""
    if where.sensitive:
        return settings.neutral_practice_name
    return where.display_name or settings.neutral_practice_name


def location_fields(where: LocationInfo, settings: SchedulingSettings) -> dict[str, Any]:
    """What every event that messages a patient says of the location: its time zone
    (the message gives local times), the name to sign with and whether it is sensitive."""
    return {
        "location_time_zone": where.time_zone,
        "practice_name": practice_name_of(where, settings),
        "sensitive_location": where.sensitive,
    }


def message_fields(
    appt: Appointment, where: LocationInfo, settings: SchedulingSettings
) -> dict[str, Any]:
    """What every event that has messaging write to a patient about an appointment
    carries: whose visit, at which location, and how to word the place."""
    return {
        "appointment_id": appt.id,
        "patient_id": appt.patient_id,
        "org_id": appt.org_id,
        "location_id": appt.location_id,
    } | location_fields(where, settings)


async def _location(
    session: AsyncSession, repos: Repositories, org_id: str, location_id: str
) -> LocationInfo | None:
    """The location, read once per transaction: the worker fires a batch of timers in
    one transaction and most of a batch's appointments share a handful of locations."""
    cache: dict[tuple[str, str], LocationInfo | None] = session.info.setdefault(
        _LOCATIONS_INFO_KEY, {}
    )
    key = (org_id, location_id)
    if key not in cache:
        cache[key] = await repos.locations.get(org_id, location_id)
    return cache[key]


async def send_reminder(
    runtime: Runtime,
    settings: SchedulingSettings,
    session: AsyncSession,
    *,
    org_id: str,
    appointment_id: str,
    touch: str,
    touch_key: str,
    due_at: datetime,
) -> None:
    """Publish `ReminderDue` for a fired reminder touch, in the timer's transaction,
    unless the appointment is no longer active or its visit has begun."""
    repos = repositories(session)
    # Raises (the kit retries the timer later) while a request is changing the
    # appointment, so a reminder never races a cancellation that is committing.
    appt = await repos.appointments.lock_appointment_nowait(org_id, appointment_id)
    now = runtime.clock.now()
    if appt is None or appt.status not in REMINDABLE_STATUSES:
        log.info("reminder %s skipped: appointment no longer active", touch_key)
        return
    if now >= appt.start_at:
        # A worker outage can leave a timer due after the visit began; a reminder
        # for a visit already under way only confuses the patient.
        log.info("reminder %s skipped: the visit has started", touch_key)
        return
    where = await _location(session, repos, appt.org_id, appt.location_id)
    if where is None:
        log.warning("reminder %s skipped: location unknown", touch_key)
        return
    if not where.runs("reminders"):
        # Switched off after this visit was booked: the planned touches go quiet too.
        log.info("reminder %s skipped: reminders switched off at the location", touch_key)
        return
    event = ReminderDue(
        touch_key=touch_key,
        touch=touch,
        **message_fields(appt, where, settings),
        start_at=appt.start_at,
        due_at=due_at,
    )
    await Work(runtime, session, repos).publish(event)
