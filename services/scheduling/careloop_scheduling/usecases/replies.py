"""Two-way confirmation: a patient's answer to a message (`ReplyReceivedV2` on
`careloop.messaging`: a keyword by SMS or a tap on the message's secure link; v1 records
may still be on the topic and are applied the same way) confirms the appointment, asks
for other times, picks one, or cancels.

- `confirm` goes through `record_confirmation`, the function behind
  `POST /appointments/{id}/confirm`, so both paths change the state and publish
  `AppointmentConfirmed` identically.
- `reschedule` offers the next open slots of the same type, provider and location
  (`RescheduleOffered`), remembered as a `reschedule_offer` row.
- `choose` rebooks into option n of the appointment's latest offer through
  `reschedule_to`, the function behind `POST /appointments/{id}/reschedule` (timers
  moved, cancelled/booked/rescheduled published). When that cannot be done (the slot
  was taken meanwhile, the offer expired, no such option) nothing is booked and a fresh
  offer goes out instead, since the patient still wants another time.
- `cancel` goes through `apply_step` with the lifecycle's `cancel`, exactly as
  `POST /appointments/{id}/cancel` does (timers ended, `AppointmentCancelled`), with the
  reason recorded as the patient's own. A visit that has started is not cancelled: the
  answer came too late, and staff decide what happened (no-op, logged).
- `accept` answers a waitlist offer: the waitlist's own consumer applies it
  (`usecases.waitlist`).

A location whose `two_way_confirmation` switch is off accepts no replies: they are
logged and dropped (the staff confirm by phone there), so nothing above happens.

Everything a reply changes (state, offer, outbox rows, audit record) commits with the
kit's inbox mark, so a redelivered reply is a no-op; replies that no longer apply (a
second `C`, a second number for a used offer, an appointment cancelled meanwhile) are
no-ops too. The org and patient of the reply must own the appointment: messaging
matched the reply to a message, and a wrong match must never move another tenant's or
another patient's visit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import (
    AppointmentCancelled,
    Event,
    ReplyReceived,
    ReplyReceivedV2,
    RescheduleOffered,
)
from careloop_kit.problems import ProblemError
from careloop_kit.repository import new_id
from careloop_kit.service import Runtime
from careloop_scheduling.domain import appointment as lifecycle
from careloop_scheduling.domain.appointment import (
    Appointment,
    Confirmation,
    InvalidTransition,
)
from careloop_scheduling.domain.reminder_settings import REMINDABLE_STATUSES
from careloop_scheduling.domain.reschedule_offer import (
    OfferStatus,
    Refusal,
    RescheduleOffer,
    choose,
)
from careloop_scheduling.settings import SchedulingSettings
from careloop_scheduling.store.appointments import SlotTaken, StaleAppointment
from careloop_scheduling.store.repository import Repositories, repositories
from careloop_scheduling.usecases.booking import apply_step, record_confirmation, reschedule_to
from careloop_scheduling.usecases.common import Work, patient_actor, settings_of
from careloop_scheduling.usecases.locations import feature_on
from careloop_scheduling.usecases.reminders import message_fields
from careloop_scheduling.usecases.slots import compute_slots

log = logging.getLogger(__name__)

RESOURCE = "Appointment"
PATIENT_CANCELLED = "cancelled by the patient"
"""`cancel_reason` of an appointment the patient cancelled by answering a message."""


@dataclass(frozen=True)
class Answer:
    """A patient's answer, whichever version of `reply.received` carried it."""

    reply_id: str
    org_id: str
    patient_id: str
    appointment_id: str | None
    intent: str
    choice: int | None
    via: str

    @staticmethod
    def of(event: Event) -> Answer:
        # v1 named the way the answer came `channel`; v2 calls it `via`.
        if isinstance(event, ReplyReceivedV2):
            via = event.via
        elif isinstance(event, ReplyReceived):
            via = event.channel
        else:
            raise TypeError(f"expected ReplyReceived(V2), got {type(event).__name__}")
        return Answer(
            event.reply_id,
            event.org_id,
            event.patient_id,
            event.appointment_id,
            event.intent,
            event.choice,
            via,
        )

    @property
    def how(self) -> str:
        """How the answer came, as the audit trail words it."""
        return "secure link" if self.via == "link" else f"{self.via} reply"


@dataclass(frozen=True)
class _Reply:
    """One reply being applied: its event, the transaction and what it needs."""

    runtime: Runtime
    settings: SchedulingSettings
    session: AsyncSession
    repos: Repositories
    event: Answer
    correlation_id: str

    @property
    def work(self) -> Work:
        """The reply's share of the transaction, as the booking steps take it."""
        return Work(self.runtime, self.session, self.repos, self.correlation_id)

    async def audit(self, appt: Appointment, action: str, detail: str) -> None:
        """Record the change in the trail with the patient as the actor."""
        await self.work.audit(
            patient_actor(appt.patient_id, appt.org_id),
            action=action,
            resource_type=RESOURCE,
            patient_id=appt.patient_id,
            resource_id=appt.id,
            detail=f"{detail} by {self.event.how}",
        )


async def _confirm(reply: _Reply, appt: Appointment) -> None:
    if appt.confirmation is Confirmation.CONFIRMED:
        log.info("reply %s: appointment %s already confirmed", reply.event.reply_id, appt.id)
        return
    changed = await record_confirmation(reply.work, appt)
    await reply.audit(changed, "update", "confirmed")


async def _cancel(reply: _Reply, appt: Appointment) -> None:
    if reply.runtime.clock.now() >= appt.start_at:
        log.info(
            "reply %s: appointment %s has started, not cancelled", reply.event.reply_id, appt.id
        )
        return
    try:
        changed = await apply_step(
            reply.work,
            appt,
            lambda current: lifecycle.cancel(current, reason=PATIENT_CANCELLED),
            AppointmentCancelled,
        )
    except InvalidTransition as exc:
        log.info("reply %s: appointment %s not cancelled: %s", reply.event.reply_id, appt.id, exc)
        return
    await reply.audit(changed, "update", "cancelled")


async def _offer(reply: _Reply, appt: Appointment, why: str) -> RescheduleOffer | None:
    """Offer the next open slots of the appointment's type, provider and location;
    None (nothing published) when there is none."""
    settings, repos = reply.settings, reply.repos
    kind = await repos.catalog.get_type(appt.org_id, appt.appointment_type_id)
    where = await repos.locations.get(appt.org_id, appt.location_id)
    if kind is None or not kind.active or where is None:
        log.warning("reply %s: appointment %s cannot be rebooked", reply.event.reply_id, appt.id)
        return None
    now = reply.runtime.clock.now()
    # The booking notice still applies when the chosen slot is booked: never offer
    # a slot the booking would refuse.
    notice = max(settings.reschedule_min_notice_minutes, settings.min_booking_notice_minutes)
    earliest = now + timedelta(minutes=notice)
    slots = await compute_slots(
        repos,
        appt.org_id,
        location_id=appt.location_id,
        zone_name=where.time_zone,
        kind=kind,
        provider_ids=[appt.provider_id],
        start=earliest,
        end=now + timedelta(days=settings.reschedule_search_days),
        not_before=earliest,
    )
    options = tuple(s.start_at for s in slots)[: settings.reschedule_offer_options]
    if not options:
        log.info("reply %s: no open slot to offer for %s", reply.event.reply_id, appt.id)
        return None
    offer = RescheduleOffer(
        id=new_id(),
        org_id=appt.org_id,
        appointment_id=appt.id,
        patient_id=appt.patient_id,
        options=options,
        created_at=now,
        expires_at=now + timedelta(hours=settings.reschedule_offer_ttl_hours),
    )
    # One live offer per appointment: a number always refers to the latest message.
    await repos.reschedule_offers.expire_open_offers(appt.org_id, appt.id)
    await repos.reschedule_offers.add_offer(offer)
    await reply.work.publish(
        RescheduleOffered(
            offer_id=offer.id,
            **message_fields(appt, where, settings),
            options=list(options),
            expires_at=offer.expires_at,
        )
    )
    await reply.audit(appt, "read", why)
    return offer


async def _choose(reply: _Reply, appt: Appointment) -> None:
    offer = await reply.repos.reschedule_offers.latest_offer(appt.org_id, appt.id)
    if offer is None:
        log.info("reply %s: no reschedule offer for %s", reply.event.reply_id, appt.id)
        return
    picked = choose(offer, reply.event.choice, reply.runtime.clock.now())
    if picked is Refusal.USED:
        # A second number after the visit was moved: the patient already has the new time.
        log.info("reply %s: offer %s already used", reply.event.reply_id, offer.id)
        return
    if isinstance(picked, Refusal):
        if picked is Refusal.EXPIRED and offer.status is OfferStatus.OPEN:
            await reply.repos.reschedule_offers.set_offer_status(
                offer.org_id, offer.id, OfferStatus.EXPIRED
            )
        log.info("reply %s: offer %s refused (%s)", reply.event.reply_id, offer.id, picked)
        await _offer(reply, appt, f"reschedule offered again ({picked.value})")
        return
    try:
        # A savepoint: the move cancels the old visit before it books the new one, so a
        # refused booking must undo the cancellation while the reply's transaction (and
        # its inbox mark) goes on to offer other times.
        async with reply.session.begin_nested():
            _, booked = await reschedule_to(reply.work, appt, start_at=picked)
    except (SlotTaken, StaleAppointment, InvalidTransition, ProblemError) as exc:
        # SlotTaken: someone booked the time since the offer; a ProblemError: the time
        # left the provider's grid (template changed, closure, notice).
        log.info("reply %s: option %s not bookable: %r", reply.event.reply_id, picked, exc)
        await _offer(reply, appt, "reschedule offered again (option taken)")
        return
    await reply.repos.reschedule_offers.set_offer_status(offer.org_id, offer.id, OfferStatus.USED)
    # Two records: the trail of either appointment must show the patient moved it.
    await reply.audit(appt, "update", f"rescheduled to {booked.id}")
    await reply.audit(booked, "create", f"booked in place of {appt.id}")


async def apply_reply(
    runtime: Runtime, session: AsyncSession, answer: Answer, *, correlation_id: str
) -> None:
    """Apply a patient's answer to the appointment it names, in the caller's
    transaction; answers that no longer apply (or are not the patient's) are no-ops."""
    if answer.intent == "accept" or answer.appointment_id is None:
        # A waitlist answer: the waitlist consumer (its own group) applies it.
        return
    repos = repositories(session)
    # Locked like a request's change, in the same order (appointment, then its
    # timers), so a reply and a staff action on the same visit serialize.
    appt = await repos.appointments.get_appointment(
        answer.org_id, answer.appointment_id, for_update=True
    )
    if appt is None or appt.patient_id != answer.patient_id:
        log.warning(
            "reply %s ignored: appointment %s is not the patient's in org %s",
            answer.reply_id,
            answer.appointment_id,
            answer.org_id,
        )
        return
    if appt.status not in REMINDABLE_STATUSES:
        log.info("reply %s ignored: appointment %s is %s", answer.reply_id, appt.id, appt.status)
        return
    if not await feature_on(repos, appt.org_id, appt.location_id, "two_way_confirmation"):
        log.info(
            "reply %s ignored: two-way confirmation is switched off at location %s",
            answer.reply_id,
            appt.location_id,
        )
        return
    reply = _Reply(
        runtime=runtime,
        settings=settings_of(runtime),
        session=session,
        repos=repos,
        event=answer,
        correlation_id=correlation_id,
    )
    if answer.intent == "confirm":
        await _confirm(reply, appt)
    elif answer.intent == "reschedule":
        await _offer(reply, appt, "reschedule offered")
    elif answer.intent == "cancel":
        await _cancel(reply, appt)
    elif answer.intent == "choose":
        await _choose(reply, appt)
    else:
        log.warning("reply %s: unknown intent %s ignored", answer.reply_id, answer.intent)
