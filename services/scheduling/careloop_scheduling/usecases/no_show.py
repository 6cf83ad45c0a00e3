"""Automatic no-show marking: a durable timer per appointment, due a grace period
after the start.

The booking (or reschedule) schedules the check in its own transaction, keyed
`<appointment_id>:no-show`, so it shares the prefix every lifecycle step cancels: a
check-in, cancellation, reschedule or manual no-show ends it. When it fires and the
appointment is still `booked`, `record_no_show` (the same function the staff endpoint
uses) applies the domain transition, publishes `AppointmentNoShow` through the outbox
and the audit trail records it under a system principal, all in the timer's
transaction: the fired mark, the status, the event and the audit record commit
together or not at all.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import AppointmentNoShow
from careloop_kit.db.timers import Timers
from careloop_kit.service import Runtime
from careloop_scheduling.domain import appointment as lifecycle
from careloop_scheduling.domain.appointment import Appointment, AppointmentStatus
from careloop_scheduling.domain.attendance import NO_SHOW_TIMER_KIND, no_show_key
from careloop_scheduling.settings import SchedulingSettings
from careloop_scheduling.store.repository import repositories
from careloop_scheduling.usecases.common import Work, system_actor
from careloop_scheduling.usecases.events import appointment_fields
from careloop_scheduling.usecases.timers import cancel_appointment_timers, timers_of

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "scheduling-no-show-check"


def no_show_grace(settings: SchedulingSettings) -> timedelta:
    return timedelta(minutes=settings.no_show_grace_minutes)


async def record_no_show(
    work: Work, current: Appointment, *, now: datetime, firing_key: str | None = None
) -> Appointment:
    """Mark a locked appointment `noshow`: transition, save, end its timers, publish.

    Raises `InvalidTransition` when the state machine refuses (already arrived,
    cancelled, or before the start) and `StaleAppointment` when it changed since it
    was read; the caller decides what that means (409 for staff; for the timer, which
    holds the row lock and found it `booked`, neither can happen).
    """
    changed = lifecycle.no_show(current, now=now)
    repos = work.repos
    await repos.appointments.save_appointment(changed, previous_version=current.version, now=now)
    await cancel_appointment_timers(
        timers_of(work.runtime), work.session, repos, changed.id, sparing=firing_key
    )
    await work.publish(AppointmentNoShow(**appointment_fields(changed, now)))
    return changed


async def schedule_no_show_check(
    timers: Timers, session: AsyncSession, appt: Appointment, *, grace: timedelta
) -> None:
    """Schedule the appointment's no-show check in the caller's transaction."""
    await timers.schedule(
        session,
        NO_SHOW_TIMER_KIND,
        appt.start_at + grace,
        {"org_id": appt.org_id, "appointment_id": appt.id},
        dedup_key=no_show_key(appt.id),
    )


async def check_no_show(
    runtime: Runtime, session: AsyncSession, *, org_id: str, appointment_id: str
) -> None:
    """The no-show check fired: mark the appointment `noshow` if it is still booked,
    audited under the service's own principal."""
    repos = repositories(session)
    # Locked for the change, without waiting: a request changing the appointment
    # right now (a check-in) holds the row and is about to cancel this timer, so
    # the attempt fails at once and the kit retries it later (by then cancelled).
    appt = await repos.appointments.lock_appointment_nowait(org_id, appointment_id, exclusive=True)
    if appt is None or appt.status is not AppointmentStatus.BOOKED:
        # Arrived, cancelled, fulfilled, already missed, or never confirmed as
        # booked (proposed): nothing to mark. Lifecycle steps cancel this timer, so
        # this is a safety net, not the normal path.
        log.info("no-show check of %s skipped: not booked", appointment_id)
        return
    now = runtime.clock.now()
    work = Work(runtime, session, repos)
    changed = await record_no_show(work, appt, now=now, firing_key=no_show_key(appt.id))
    # Healthcare operations: nobody treats the patient here, the service keeps its own
    # records straight.
    await work.audit(
        system_actor(SYSTEM_ACTOR, changed.org_id),
        action="update",
        resource_type="Appointment",
        patient_id=changed.patient_id,
        resource_id=changed.id,
    )
