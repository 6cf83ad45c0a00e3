"""A linked appointment moves its referral: the patient's arrival is `seen`, a
cancellation or a no-show sends the referral back to `patient contacted` (someone must
reach the patient again), and a reschedule carries the link to the new appointment.

Scheduling's appointment events (`careloop.scheduling`) arrive in the transaction of the
consumer's inbox mark, so a redelivered event is a no-op; an event about an appointment
no referral is linked to, or one that no longer matches the referral's stage (it was
moved by hand meanwhile), changes nothing. Each change is audited on the patient's trail
with the service as the actor.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.scheduling import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentEvent,
    AppointmentNoShow,
)
from careloop_kit.audit import AuditEntry, recorder_of
from careloop_kit.auth import Principal
from careloop_kit.auth.permissions import CLINICAL
from careloop_kit.service import Runtime
from careloop_referrals.domain.referral import Referral, Stage, relink
from careloop_referrals.store.repository import repositories
from careloop_referrals.usecases.authorizations import count_arrival
from careloop_referrals.usecases.clocks import restart_clock
from careloop_referrals.usecases.moves import take_step
from careloop_referrals.usecases.referrals import RESOURCE

log = logging.getLogger(__name__)

SERVICE_ACTOR = "referrals"

# Said on the history when the visit, not a person, moved the referral (sealed like
# every transition reason, so the column holds one kind of value).
_BACK_TO_CONTACT = {
    AppointmentCancelled.event_type: "The linked appointment was cancelled.",
    AppointmentNoShow.event_type: "The patient did not come to the linked appointment.",
}


async def apply_appointment(
    runtime: Runtime, session: AsyncSession, event: AppointmentEvent
) -> Referral | None:
    """Move the referral linked to the event's appointment; the referral after the
    change, or None when nothing changed."""
    repos = repositories(session)
    if isinstance(event, AppointmentBooked):
        if event.rescheduled_from_id is None:
            return None
        current = await repos.referrals.by_appointment(event.org_id, event.rescheduled_from_id)
        if current is None or current.stage is not Stage.SCHEDULED:
            return None
        moved = relink(current, event.appointment_id)
        await repos.referrals.relink(
            moved, previous_version=current.version, now=runtime.clock.now()
        )
        await restart_clock(runtime, session, moved, left=current)
        await _audit(runtime, session, moved)
        log.info(
            "referral %s follows appointment %s to %s",
            moved.id,
            event.rescheduled_from_id,
            event.appointment_id,
        )
        return moved
    current = await repos.referrals.by_appointment(event.org_id, event.appointment_id)
    if current is None or current.stage is not Stage.SCHEDULED:
        return None
    if isinstance(event, AppointmentCheckedIn):
        to, reason = Stage.SEEN, None
    elif isinstance(event, AppointmentNoShow) or (
        isinstance(event, AppointmentCancelled) and event.rescheduled_to_id is None
    ):
        to, reason = Stage.PATIENT_CONTACTED, _BACK_TO_CONTACT[event.event_type]
    else:
        return None
    moved = await take_step(
        runtime, session, current, to, actor=f"service:{SERVICE_ACTOR}", reason=reason
    )
    if to is Stage.SEEN:
        await count_arrival(runtime, session, moved, event.appointment_id)
    await _audit(runtime, session, moved)
    log.info(
        "referral %s: %s -> %s by appointment %s",
        moved.id,
        current.stage,
        moved.stage,
        event.appointment_id,
    )
    return moved


async def _audit(runtime: Runtime, session: AsyncSession, moved: Referral) -> None:
    system = Principal(actor_id=SERVICE_ACTOR, actor_type="system", org_id=moved.org_id)
    entry = AuditEntry(
        action="update",
        resource_type=RESOURCE,
        phi_categories=[CLINICAL],
        patient_id=moved.patient_id,
        resource_id=moved.id,
    )
    await recorder_of(runtime).record(session, system, entry)
