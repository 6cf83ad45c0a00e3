"""The waitlist at work: freed times offered in waitlist order, the first acceptance
books, the rest are told the time is gone.

- **A time frees up.** The consumer group `waitlist` (`handlers.waitlist`) reads
  scheduling's own `AppointmentCancelled` and `AppointmentRescheduled` events, so every
  path that frees a time (staff cancel, a patient's cancel, a reschedule by staff or by
  reply) reaches it without those paths knowing about the waitlist. The time becomes a
  `waitlist_slot` (one per freed appointment: the two events of one reschedule open it
  once) unless it is already booked again, too close to its start, or at a location
  whose `waitlist` feature switch is off.
- **Rounds.** Each round offers the slot to the next `waitlist_offer_batch` matching
  entries in waitlist order (`WaitlistSlotOffered` each) and schedules a kit timer at
  the round's expiry. When it fires with the slot still open, the round's offers close
  `expired` and the next entries in line get theirs; nobody left, or too late: the slot
  lapses.
- **Acceptance.** The same group reads `ReplyReceivedV2` with intent `accept` (the
  patient's `Y`; other intents belong to the replies consumer). The slot row is locked
  first, so of two acceptances at once the second waits and then finds it filled. The
  first books through the booking path (`usecases.booking.book`: the grid, the
  double-booking constraint, timers, `AppointmentBooked`) or, for an entry that names
  an appointment, through `reschedule_to`; every other open offer closes `taken`. A
  late or repeated acceptance books nothing: `answered_late` tells messaging to say
  the time is gone.

Each event's effects (rows, outbox, audit) commit with the kit's inbox mark, so a
redelivery is a no-op.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import ReplyReceivedV2, WaitlistOfferClosed, WaitlistSlotOffered
from careloop_contracts.scheduling import WaitlistCloseReason
from careloop_kit.problems import ProblemError
from careloop_kit.repository import new_id
from careloop_kit.service import Runtime
from careloop_scheduling.domain.appointment import (
    Appointment,
    AppointmentStatus,
    InvalidTransition,
)
from careloop_scheduling.domain.reminder_settings import REMINDABLE_STATUSES
from careloop_scheduling.domain.waitlist import (
    WAITLIST_TIMER_KIND,
    Answer,
    EntryStatus,
    FreedSlot,
    OfferStatus,
    SlotStatus,
    WaitlistEntry,
    WaitlistOffer,
    answer,
    matches,
    next_in_line,
    round_expiry,
)
from careloop_scheduling.settings import SchedulingSettings
from careloop_scheduling.store.appointments import SlotTaken, StaleAppointment
from careloop_scheduling.store.locations import LocationInfo
from careloop_scheduling.store.repository import Repositories, repositories
from careloop_scheduling.usecases.booking import book, reschedule_to
from careloop_scheduling.usecases.common import Work, patient_actor, settings_of, system_actor
from careloop_scheduling.usecases.reminders import location_fields
from careloop_scheduling.usecases.timers import timers_of

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "scheduling-waitlist"

_CLOSED_BY: dict[OfferStatus, WaitlistCloseReason] = {
    OfferStatus.ACCEPTED: "accepted",
    OfferStatus.TAKEN: "taken",
    OfferStatus.EXPIRED: "expired",
    OfferStatus.WITHDRAWN: "withdrawn",
}


def round_key(slot_id: str, round_number: int) -> str:
    """Dedup key of a round's expiry timer."""
    return f"waitlist:{slot_id}:{round_number}"


@dataclass(frozen=True)
class Waitlist:
    """One event's or timer's work on the waitlist, in its transaction."""

    runtime: Runtime
    settings: SchedulingSettings
    session: AsyncSession
    repos: Repositories
    correlation_id: str | None = None

    def now(self) -> datetime:
        return self.runtime.clock.now()

    @property
    def work(self) -> Work:
        """The waitlist's share of the transaction, as the booking steps take it."""
        return Work(self.runtime, self.session, self.repos, self.correlation_id)

    async def audit(
        self,
        subject: WaitlistEntry | WaitlistOffer,
        *,
        action: str,
        resource_type: str,
        resource_id: str,
        detail: str,
        by_patient: bool = False,
    ) -> None:
        """Record an access to the patient of `subject` (an entry or an offer made to
        it), by the patient themselves or by the waitlist on the practice's behalf."""
        patient_id, org_id = subject.patient_id, subject.org_id
        await self.work.audit(
            patient_actor(patient_id, org_id) if by_patient else system_actor(SYSTEM_ACTOR, org_id),
            action=action,
            resource_type=resource_type,
            patient_id=patient_id,
            resource_id=resource_id,
            detail=detail,
        )

    def offer_fields(
        self, offer: WaitlistOffer, slot: FreedSlot, where: LocationInfo
    ) -> dict[str, Any]:
        """The fields both offer events carry: whose offer, of which time, where."""
        return {
            "offer_id": offer.id,
            "entry_id": offer.entry_id,
            "patient_id": offer.patient_id,
            "org_id": offer.org_id,
            "location_id": slot.location_id,
            "start_at": slot.start_at,
        } | location_fields(where, self.settings)

    async def publish_closed(
        self,
        offer: WaitlistOffer,
        slot: FreedSlot,
        where: LocationInfo,
        reason: WaitlistCloseReason,
        *,
        appointment_id: str | None = None,
    ) -> None:
        await self.work.publish(
            WaitlistOfferClosed(
                **self.offer_fields(offer, slot, where),
                reason=reason,
                appointment_id=appointment_id,
                closed_at=self.now(),
            )
        )

    async def close_offers(
        self,
        offers: list[WaitlistOffer],
        status: OfferStatus,
        slot: FreedSlot,
        where: LocationInfo,
    ) -> None:
        """Close open offers; their entries go back to waiting (they still want a time)."""
        now = self.now()
        for offer in offers:
            await self.repos.waitlist.close_waitlist_offer(offer.id, status, now)
            await self.publish_closed(offer, slot, where, _CLOSED_BY[status])
        await self.repos.waitlist.set_entry_status(
            slot.org_id,
            [o.entry_id for o in offers],
            EntryStatus.WAITING,
            now,
            only_if=EntryStatus.OFFERED,
        )

    async def free(self, appt: Appointment) -> FreedSlot | None:
        """Open the cancelled appointment's time to the waitlist, unless it is taken
        again or too close to its start; None when nothing was opened."""
        repos, now = self.repos, self.now()
        if appt.start_at - now <= timedelta(minutes=self.settings.waitlist_min_notice_minutes):
            log.info("freed time of %s not offered: too close to the start", appt.id)
            return None
        if await repos.appointments.busy(
            appt.org_id, [appt.provider_id], appt.start_at, appt.end_at
        ):
            # Booked again already (or a reschedule moved it within its own time).
            log.info("freed time of %s not offered: taken again", appt.id)
            return None
        where = await repos.locations.get(appt.org_id, appt.location_id)
        if where is None:
            log.warning("freed time of %s not offered: location unknown", appt.id)
            return None
        if not where.runs("waitlist"):
            log.info("freed time of %s not offered: the waitlist is switched off", appt.id)
            return None
        slot = FreedSlot(
            id=new_id(),
            org_id=appt.org_id,
            provider_id=appt.provider_id,
            location_id=appt.location_id,
            appointment_type_id=appt.appointment_type_id,
            start_at=appt.start_at,
            end_at=appt.end_at,
            source_appointment_id=appt.id,
            source_patient_id=appt.patient_id,
            created_at=now,
        )
        if not await repos.waitlist.add_freed_slot(slot):
            return None
        return await self.offer_round(slot, where)

    async def offer_round(self, slot: FreedSlot, where: LocationInfo) -> FreedSlot:
        """Offer the slot to the next entries in line and time the round; lapse it when
        nobody is left or it is too late."""
        repos, settings, now = self.repos, self.settings, self.now()
        expires = round_expiry(
            now,
            slot.start_at,
            ttl=timedelta(minutes=settings.waitlist_offer_ttl_minutes),
            min_notice=timedelta(minutes=settings.waitlist_min_notice_minutes),
        )
        chosen: list[WaitlistEntry] = []
        if expires is not None:
            zone = ZoneInfo(where.time_zone)
            await repos.waitlist.expire_entries_before(
                slot.org_id, slot.location_id, now.astimezone(zone).date()
            )
            candidates = await repos.waitlist.waiting_entries(
                slot.org_id,
                slot.location_id,
                slot.appointment_type_id,
                on_or_after=slot.start_at.astimezone(zone).date(),
            )
            matching: list[WaitlistEntry] = []
            for entry in candidates:
                current_start = await self._current_start(entry)
                if entry.appointment_id is not None and current_start is None:
                    continue  # the visit it wanted moved earlier is gone
                if matches(entry, slot, time_zone=where.time_zone, current_start=current_start):
                    matching.append(entry)
            offered = [o.entry_id for o in await repos.waitlist.slot_offers(slot.id)]
            chosen = next_in_line(
                matching, already_offered=offered, batch=settings.waitlist_offer_batch
            )
        if expires is None or not chosen:
            lapsed = replace(slot, status=SlotStatus.LAPSED)
            await repos.waitlist.update_freed_slot(lapsed, now)
            log.info("freed slot %s lapsed after %d round(s)", slot.id, slot.round)
            return lapsed
        current = replace(slot, round=slot.round + 1)
        await repos.waitlist.update_freed_slot(current, now)
        for entry in chosen:
            offer = WaitlistOffer(
                id=new_id(),
                org_id=slot.org_id,
                slot_id=slot.id,
                entry_id=entry.id,
                patient_id=entry.patient_id,
                round=current.round,
                created_at=now,
                expires_at=expires,
            )
            await repos.waitlist.add_waitlist_offer(offer)
            await self.work.publish(
                WaitlistSlotOffered(
                    **self.offer_fields(offer, slot, where),
                    appointment_id=entry.appointment_id,
                    expires_at=expires,
                )
            )
            await self.audit(
                entry,
                action="update",
                resource_type="WaitlistEntry",
                resource_id=entry.id,
                detail=f"offered freed slot {slot.id} (offer {offer.id})",
            )
        await repos.waitlist.set_entry_status(
            slot.org_id, [e.id for e in chosen], EntryStatus.OFFERED, now
        )
        await timers_of(self.runtime).schedule(
            self.session,
            WAITLIST_TIMER_KIND,
            expires,
            {"org_id": slot.org_id, "slot_id": slot.id, "round": current.round},
            dedup_key=round_key(slot.id, current.round),
        )
        return current

    async def _current_start(self, entry: WaitlistEntry) -> datetime | None:
        """The start of the appointment an entry wants to move, while it is still
        booked; None for an entry without one (or whose visit is gone)."""
        if entry.appointment_id is None:
            return None
        appt = await self.repos.appointments.get_appointment(entry.org_id, entry.appointment_id)
        if appt is None or appt.status not in REMINDABLE_STATUSES:
            return None
        return appt.start_at

    async def end_round(self, slot: FreedSlot, round_number: int) -> None:
        """The round's expiry: its unanswered offers close, the next entries get theirs."""
        if slot.status is not SlotStatus.OPEN or slot.round != round_number:
            return
        where = await self.repos.locations.get(slot.org_id, slot.location_id)
        if where is None:
            return
        unanswered = await self.repos.waitlist.slot_offers(slot.id, status=OfferStatus.OPEN)
        await self.close_offers(unanswered, OfferStatus.EXPIRED, slot, where)
        await self.offer_round(slot, where)

    async def accept(self, event: ReplyReceivedV2, offer_id: str) -> None:
        """A patient's `Y` to offer `offer_id`: book the slot if the offer is still
        good, else say it is gone."""
        repos = self.repos
        found = await repos.waitlist.get_waitlist_offer(event.org_id, offer_id)
        if found is None or found.patient_id != event.patient_id:
            log.warning(
                "accept %s ignored: offer %s is not the patient's in org %s",
                event.reply_id,
                offer_id,
                event.org_id,
            )
            return
        # The slot first: every acceptance of this slot serializes here, so the second
        # of two simultaneous ones reads the slot filled.
        slot = await repos.waitlist.get_freed_slot(found.org_id, found.slot_id, lock=True)
        offer = await repos.waitlist.get_waitlist_offer(found.org_id, found.id, for_update=True)
        if slot is None or offer is None:
            return
        where = await repos.locations.get(slot.org_id, slot.location_id)
        if where is None:
            return
        verdict = answer(offer, slot, self.now())
        if verdict is Answer.ALREADY_ACCEPTED:
            log.info("accept %s: offer %s already accepted", event.reply_id, offer.id)
            return
        if verdict is Answer.LATE:
            if offer.status is OfferStatus.OPEN:
                # Expired but the round timer has not run yet: close it now.
                await repos.waitlist.close_waitlist_offer(offer.id, OfferStatus.EXPIRED, self.now())
                await repos.waitlist.set_entry_status(
                    offer.org_id,
                    [offer.entry_id],
                    EntryStatus.WAITING,
                    self.now(),
                    only_if=EntryStatus.OFFERED,
                )
            await self.publish_closed(offer, slot, where, "answered_late")
            await self.audit(
                offer,
                action="read",
                resource_type="WaitlistEntry",
                resource_id=offer.entry_id,
                detail=f"late acceptance of waitlist offer {offer.id} by {event.via}",
                by_patient=True,
            )
            return
        entry = await repos.waitlist.get_waitlist_entry(
            offer.org_id, offer.entry_id, for_update=True
        )
        if entry is None:
            return
        try:
            # A savepoint: a refused booking (someone booked the time directly, the grid
            # changed, the visit to move is gone) must leave the reply's transaction
            # usable to close the offers.
            async with self.session.begin_nested():
                booked, moved_from = await self._book(entry, slot)
        except (SlotTaken, StaleAppointment, InvalidTransition, ProblemError) as exc:
            log.info("accept %s: slot %s not bookable: %r", event.reply_id, slot.id, exc)
            await self.close_offers(
                await repos.waitlist.slot_offers(slot.id, status=OfferStatus.OPEN),
                OfferStatus.TAKEN,
                slot,
                where,
            )
            await repos.waitlist.update_freed_slot(
                replace(slot, status=SlotStatus.LAPSED), self.now()
            )
            await timers_of(self.runtime).cancel(self.session, round_key(slot.id, slot.round))
            return
        now = self.now()
        await repos.waitlist.update_freed_slot(
            replace(
                slot,
                status=SlotStatus.FILLED,
                filled_by_entry_id=entry.id,
                appointment_id=booked.id,
            ),
            now,
        )
        await repos.waitlist.close_waitlist_offer(offer.id, OfferStatus.ACCEPTED, now)
        await repos.waitlist.set_entry_status(
            entry.org_id, [entry.id], EntryStatus.BOOKED, now, booked_appointment_id=booked.id
        )
        await self.publish_closed(offer, slot, where, "accepted", appointment_id=booked.id)
        others = await repos.waitlist.slot_offers(slot.id, status=OfferStatus.OPEN)
        await self.close_offers(others, OfferStatus.TAKEN, slot, where)
        await timers_of(self.runtime).cancel(self.session, round_key(slot.id, slot.round))
        via = f"by {event.via} acceptance of waitlist offer {offer.id}"
        # A move changes two appointments: the trail of each must show the patient did it.
        changes = [("create", booked.id, f"booked {via}")]
        if moved_from is not None:
            changes.insert(0, ("update", moved_from, f"rescheduled to {booked.id} {via}"))
        for action, appointment_id, detail in changes:
            await self.audit(
                entry,
                action=action,
                resource_type="Appointment",
                resource_id=appointment_id,
                detail=detail,
                by_patient=True,
            )

    async def free_time_of(self, org_id: str, appointment_id: str) -> FreedSlot | None:
        """A time was freed (a cancellation, or the old half of a reschedule): offer it
        if the appointment is indeed cancelled."""
        appt = await self.repos.appointments.get_appointment(org_id, appointment_id)
        if appt is None or appt.status is not AppointmentStatus.CANCELLED:
            return None
        return await self.free(appt)

    async def round_due(self, org_id: str, slot_id: str, round_number: int) -> None:
        """A round's expiry timer fired: end the round if the slot is still in it."""
        # Without waiting: an acceptance holding the slot is about to fill it and cancel
        # this timer; the kit retries the attempt later.
        slot = await self.repos.waitlist.get_freed_slot(org_id, slot_id, lock=True, nowait=True)
        if slot is not None:
            await self.end_round(slot, round_number)

    async def withdraw(self, entry: WaitlistEntry) -> None:
        """Take a locked entry off the waitlist; its open offers are withdrawn."""
        repos = self.repos
        for offer in await repos.waitlist.open_offers_of_entry(entry.org_id, entry.id):
            slot = await repos.waitlist.get_freed_slot(entry.org_id, offer.slot_id)
            where = await repos.locations.get(entry.org_id, entry.location_id)
            if slot is not None and where is not None:
                await self.close_offers([offer], OfferStatus.WITHDRAWN, slot, where)
        await repos.waitlist.set_entry_status(
            entry.org_id, [entry.id], EntryStatus.REMOVED, self.now()
        )

    async def _book(self, entry: WaitlistEntry, slot: FreedSlot) -> tuple[Appointment, str | None]:
        """Book the slot for the entry's patient (or move the entry's appointment into
        it): the new appointment and the id of the one it replaces, if any."""
        repos = self.repos
        if entry.appointment_id is not None:
            old = await repos.appointments.get_appointment(
                entry.org_id, entry.appointment_id, for_update=True
            )
            if old is None or old.patient_id != entry.patient_id:
                raise InvalidTransition("the appointment to move is gone")
            _, booked = await reschedule_to(
                self.work, old, start_at=slot.start_at, provider_id=slot.provider_id
            )
            return booked, old.id
        # The same step as `POST /appointments`: the grid, the constraint, the reminders
        # and the no-show check, then the event.
        appt = await book(
            self.work,
            org_id=entry.org_id,
            patient_id=entry.patient_id,
            provider_id=slot.provider_id,
            location_id=slot.location_id,
            type_id=entry.appointment_type_id,
            start_at=slot.start_at,
        )
        return appt, None


def waitlist_work(
    runtime: Runtime, session: AsyncSession, correlation_id: str | None = None
) -> Waitlist:
    """The waitlist's work in this transaction; `correlation_id` ties what it publishes
    and audits to the event that caused it."""
    return Waitlist(
        runtime=runtime,
        settings=settings_of(runtime),
        session=session,
        repos=repositories(session),
        correlation_id=correlation_id,
    )
