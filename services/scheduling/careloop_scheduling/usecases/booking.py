"""Book an appointment, apply a lifecycle step, confirm, reschedule: the steps the
endpoints, a patient's reply and the waitlist all take, so every path changes the state,
moves the timers and publishes the events identically."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from careloop_contracts import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentConfirmed,
    AppointmentEvent,
    AppointmentRescheduled,
)
from careloop_kit.repository import new_id
from careloop_scheduling.domain import appointment as lifecycle
from careloop_scheduling.domain.appointment import Appointment, AppointmentStatus
from careloop_scheduling.domain.reminder_settings import REMINDABLE_STATUSES
from careloop_scheduling.usecases.catalog import zone_of
from careloop_scheduling.usecases.common import Work, settings_of
from careloop_scheduling.usecases.events import appointment_fields
from careloop_scheduling.usecases.no_show import no_show_grace, schedule_no_show_check
from careloop_scheduling.usecases.reminders import schedule_reminders
from careloop_scheduling.usecases.slots import bookable_slot
from careloop_scheduling.usecases.timers import cancel_appointment_timers, timers_of


async def plan_reminder_timers(work: Work, appt: Appointment) -> None:
    """Schedule the new appointment's reminder timers and its no-show check in the
    booking's transaction."""
    runtime, session, repos = work.runtime, work.session, work.repos
    zone_name = await zone_of(repos, appt.org_id, appt.location_id)
    timers = timers_of(runtime)
    await schedule_reminders(
        timers, session, repos, appt, time_zone=zone_name, now=runtime.clock.now()
    )
    await schedule_no_show_check(timers, session, appt, grace=no_show_grace(settings_of(runtime)))


async def book(
    work: Work,
    *,
    org_id: str,
    patient_id: str,
    provider_id: str,
    location_id: str,
    type_id: str,
    start_at: datetime,
) -> Appointment:
    """Book the slot starting at `start_at` for the patient: the grid check, the
    insert (the double-booking constraint decides), the reminders and the no-show
    check, then `AppointmentBooked`.

    Raises `InvalidScheduling` (not a slot of the grid), `NotFound` (no such provider
    or type) and `SlotTaken` (someone holds that time)."""
    runtime, repos = work.runtime, work.repos
    slot = await bookable_slot(
        repos,
        runtime,
        org_id,
        provider_id=provider_id,
        location_id=location_id,
        type_id=type_id,
        start_at=start_at,
    )
    now = runtime.clock.now()
    appt = Appointment(
        id=new_id(),
        org_id=org_id,
        patient_id=patient_id,
        provider_id=slot.provider_id,
        location_id=slot.location_id,
        appointment_type_id=type_id,
        start_at=slot.start_at,
        end_at=slot.end_at,
        status=AppointmentStatus.BOOKED,
    )
    await repos.appointments.add_appointment(appt, now)
    await plan_reminder_timers(work, appt)
    await work.publish(AppointmentBooked(**appointment_fields(appt, now)))
    return appt


async def apply_step(
    work: Work,
    current: Appointment,
    change: Callable[[Appointment], Appointment],
    event: type[AppointmentEvent],
    **event_fields: object,
) -> Appointment:
    """Apply one lifecycle step to a locked appointment: transition, save, end its
    timers when it leaves the active states, publish.

    Raises `InvalidTransition` when the state machine refuses and `StaleAppointment`
    when it changed since it was read; the caller decides what that means."""
    changed = change(current)
    now = work.runtime.clock.now()
    await work.repos.appointments.save_appointment(
        changed, previous_version=current.version, now=now
    )
    if changed.status not in REMINDABLE_STATUSES:
        # Cancelled, arrived, missed or fulfilled: nothing left to remind of, nor to
        # check for a no-show. A confirmation keeps the status, so its later
        # reminders and its no-show check stay (see usecases.reminders).
        await cancel_appointment_timers(
            timers_of(work.runtime), work.session, work.repos, changed.id
        )
    await work.publish(event(**appointment_fields(changed, now), **event_fields))
    return changed


async def record_confirmation(work: Work, current: Appointment) -> Appointment:
    """Confirm a locked appointment and publish `AppointmentConfirmed`: the staff
    endpoint and a patient's `C` reply (`usecases.replies`) both come through here."""
    return await apply_step(work, current, lifecycle.confirm, AppointmentConfirmed)


async def reschedule_to(
    work: Work,
    old: Appointment,
    *,
    start_at: datetime,
    provider_id: str | None = None,
) -> tuple[Appointment, Appointment]:
    """Move a locked appointment to the slot starting at `start_at`: cancel it, book its
    replacement, move its timers, publish cancelled, booked and rescheduled. The staff
    endpoint, a patient's numbered reply and a waitlist acceptance all come through here.

    Raises `InvalidScheduling` (not a slot of the grid), `InvalidTransition`,
    `StaleAppointment` and `SlotTaken` (someone holds that time); the caller's
    transaction then holds a half-done move, so it must roll it back (the endpoint
    fails the request, the reply and waitlist paths run this in a savepoint)."""
    runtime, repos = work.runtime, work.repos
    provider_id = provider_id or old.provider_id
    slot = await bookable_slot(
        repos,
        runtime,
        old.org_id,
        provider_id=provider_id,
        location_id=old.location_id,
        type_id=old.appointment_type_id,
        start_at=start_at,
    )
    cancelled, booked = lifecycle.reschedule(
        old,
        new_id=new_id(),
        start_at=slot.start_at,
        end_at=slot.end_at,
        provider_id=provider_id,
    )
    now = runtime.clock.now()
    # Free the old time first, so moving within an overlapping range is allowed.
    await repos.appointments.save_appointment(cancelled, previous_version=old.version, now=now)
    await repos.appointments.add_appointment(booked, now)
    # The new appointment has its own id, hence its own timer keys: the old keys
    # (reminders and no-show check) are cancelled and can never fire, the new plan
    # starts from now (a confirmation of the new time, then the reminders before it)
    # and its no-show check follows the new start.
    await cancel_appointment_timers(timers_of(runtime), work.session, repos, cancelled.id)
    await plan_reminder_timers(work, booked)
    events: list[AppointmentEvent] = [
        AppointmentCancelled(**appointment_fields(cancelled, now), rescheduled_to_id=booked.id),
        AppointmentBooked(**appointment_fields(booked, now), rescheduled_from_id=cancelled.id),
        AppointmentRescheduled(
            **appointment_fields(booked, now),
            previous_appointment_id=cancelled.id,
            previous_start_at=cancelled.start_at,
        ),
    ]
    for event in events:
        await work.publish(event)
    return cancelled, booked
