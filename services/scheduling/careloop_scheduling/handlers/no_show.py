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
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import AppointmentNoShow
from careloop_kit.audit import AuditEntry, recorder_of
from careloop_kit.auth import Principal
from careloop_kit.auth.permissions import CLINICAL
from careloop_kit.db.timers import DueTimer, TimerHandler, Timers
from careloop_kit.service import Runtime
from careloop_scheduling.domain import appointment as lifecycle
from careloop_scheduling.domain.appointment import Appointment, AppointmentStatus
from careloop_scheduling.domain.attendance import NO_SHOW_TIMER_KIND, no_show_key
from careloop_scheduling.handlers.timers import cancel_appointment_timers, timers_of
from careloop_scheduling.settings import SchedulingSettings
from careloop_scheduling.store.repository import SchedulingRepository

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "scheduling-no-show-check"
# HL7 PurposeOfUse "healthcare operations": nobody treats the patient here, the
# service keeps its own records straight.
OPERATIONS = "HOPERAT"


def appointment_fields(a: Appointment, now: datetime) -> dict[str, object]:
    """The fields every appointment event carries (ids and times, never a name)."""
    return {
        "appointment_id": a.id,
        "patient_id": a.patient_id,
        "org_id": a.org_id,
        "location_id": a.location_id,
        "provider_id": a.provider_id,
        "appointment_type_id": a.appointment_type_id,
        "start_at": a.start_at,
        "end_at": a.end_at,
        "status": a.status.value,
        "confirmation": a.confirmation.value,
        "occurred_at": now,
    }


async def record_no_show(
    runtime: Runtime,
    session: AsyncSession,
    repo: SchedulingRepository,
    current: Appointment,
    *,
    now: datetime,
    correlation_id: str | None = None,
    firing_key: str | None = None,
) -> Appointment:
    """Mark a locked appointment `noshow`: transition, save, end its timers, publish.

    Raises `InvalidTransition` when the state machine refuses (already arrived,
    cancelled, or before the start) and `StaleAppointment` when it changed since it
    was read; the caller decides what that means (409 for staff; for the timer, which
    holds the row lock and found it `booked`, neither can happen).
    """
    changed = lifecycle.no_show(current, now=now)
    await repo.save_appointment(changed, previous_version=current.version, now=now)
    await cancel_appointment_timers(
        timers_of(runtime), session, repo, changed.id, sparing=firing_key
    )
    await runtime.outbox.add(
        session,
        AppointmentNoShow(**appointment_fields(changed, now)),
        org_id=changed.org_id,
        location_id=changed.location_id,
        correlation_id=correlation_id,
    )
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


def no_show_handler(runtime: Runtime) -> TimerHandler:
    """Mark a still-booked appointment `noshow` when its check fires."""

    async def fire(session: AsyncSession, timer: DueTimer) -> None:
        payload: dict[str, Any] = timer.payload
        repo = SchedulingRepository(session)
        # Locked for the change, without waiting: a request changing the appointment
        # right now (a check-in) holds the row and is about to cancel this timer, so
        # the attempt fails at once and the kit retries it later (by then cancelled).
        appt = await repo.lock_appointment_nowait(
            payload["org_id"], payload["appointment_id"], exclusive=True
        )
        if appt is None or appt.status is not AppointmentStatus.BOOKED:
            # Arrived, cancelled, fulfilled, already missed, or never confirmed as
            # booked (proposed): nothing to mark. Lifecycle steps cancel this timer, so
            # this is a safety net, not the normal path.
            log.info("no-show check of %s skipped: not booked", payload["appointment_id"])
            return
        now = runtime.clock.now()
        changed = await record_no_show(
            runtime, session, repo, appt, now=now, firing_key=no_show_key(appt.id)
        )
        principal = Principal(
            actor_id=SYSTEM_ACTOR,
            actor_type="system",
            org_id=changed.org_id,
            purpose_of_use=OPERATIONS,
        )
        entry = AuditEntry(
            action="update",
            resource_type="Appointment",
            phi_categories=[CLINICAL],
            patient_id=changed.patient_id,
            resource_id=changed.id,
        )
        await recorder_of(runtime).record(session, principal, entry)

    return fire


def no_show_grace(settings: SchedulingSettings) -> timedelta:
    return timedelta(minutes=settings.no_show_grace_minutes)
