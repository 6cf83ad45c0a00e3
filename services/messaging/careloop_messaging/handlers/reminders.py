"""The `reminders` consumer: each `ReminderDue`, `RescheduleOffered` and
`WaitlistSlotOffered` becomes one queued or skipped message; a `WaitlistOfferClosed`
becomes at most one "that time is gone" message (`usecases.reminders`).

The kit's consumer records the event id in the inbox in the same transaction as the
message row, so a redelivered event is a no-op.

Contact data comes from the patients service. The kit calls `prepare` with each batch
before it opens the batch transaction: the contacts of the batch's patients are read
then, once per patient and several at a time (`patients_concurrency`), skipping touches
that already have their message. Inside the transaction the use case only looks them up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import (
    Envelope,
    Event,
    ReminderDue,
    RescheduleOffered,
    WaitlistOfferClosed,
    WaitlistSlotOffered,
)
from careloop_contracts.scheduling import TOPIC as SCHEDULING_TOPIC
from careloop_kit.bus.consumer import Handler, Prepared
from careloop_kit.service import ConsumerSpec, Runtime
from careloop_messaging.domain.outreach import (
    OFFER_TOUCH,
    WAITLIST_CLOSED_TOUCH,
    WAITLIST_OFFER_TOUCH,
    waitlist_touch_key,
)
from careloop_messaging.usecases.context import batch_contacts_for
from careloop_messaging.usecases.reminders import (
    EventScope,
    Touch,
    close_waitlist_offer,
    read_ahead_contacts,
    record_touch,
)

TouchEvent = ReminderDue | RescheduleOffered | WaitlistSlotOffered | WaitlistOfferClosed
"""The scheduling events that lead to a message."""

E = TypeVar("E", bound=Event)


def reminder_handlers(runtime: Runtime) -> Mapping[str, Handler]:
    """Handlers of the reminders consumer, by event type."""
    batch_contacts = batch_contacts_for(runtime)

    async def prepare(events: Sequence[tuple[Envelope, Event]]) -> None:
        """Read the batch's contacts before the kit opens the batch transaction."""
        contacts = batch_contacts()
        contacts.clear()
        wanted = [w for _, event in events if (w := _contact_wanted(event)) is not None]
        await read_ahead_contacts(runtime, contacts, wanted)

    def scope(session: AsyncSession, envelope: Envelope) -> EventScope:
        return EventScope(runtime, session, batch_contacts(), envelope.id, envelope.correlation_id)

    async def on_reminder_due(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        due = _expected(event, ReminderDue)
        touch = _touch(
            due,
            due.touch_key,
            due.touch,
            appointment_id=due.appointment_id,
            start_at=due.start_at,
        )
        await record_touch(scope(session, envelope), touch)

    async def on_reschedule_offered(
        session: AsyncSession, envelope: Envelope, event: Event
    ) -> None:
        offered = _expected(event, RescheduleOffered)
        touch = _touch(
            offered,
            offer_touch_key(offered.offer_id),
            OFFER_TOUCH,
            appointment_id=offered.appointment_id,
            # The row needs a visit time and an offer has several: option 1 stands in.
            start_at=offered.options[0],
            offer_options=tuple(offered.options),
            offer_expires_at=offered.expires_at,
        )
        await record_touch(scope(session, envelope), touch)

    async def on_waitlist_offered(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        offered = _expected(event, WaitlistSlotOffered)
        touch = waitlist_touch(offered, WAITLIST_OFFER_TOUCH, offer_expires_at=offered.expires_at)
        await record_touch(scope(session, envelope), touch)

    async def on_waitlist_closed(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        closed = _expected(event, WaitlistOfferClosed)
        await close_waitlist_offer(
            scope(session, envelope),
            offer_id=closed.offer_id,
            reason=closed.reason,
            gone=waitlist_touch(closed, WAITLIST_CLOSED_TOUCH),
        )

    return {
        WaitlistSlotOffered.event_type: on_waitlist_offered,
        WaitlistOfferClosed.event_type: on_waitlist_closed,
        ReminderDue.event_type: Prepared(on_reminder_due, prepare),
        RescheduleOffered.event_type: Prepared(on_reschedule_offered, prepare),
    }


def _contact_wanted(event: Event) -> tuple[str, str, str] | None:
    """(touch key, org id, patient id) of an event whose touch needs contact data."""
    if isinstance(event, ReminderDue):
        return event.touch_key, event.org_id, event.patient_id
    if isinstance(event, RescheduleOffered):
        return offer_touch_key(event.offer_id), event.org_id, event.patient_id
    return None


def offer_touch_key(offer_id: str) -> str:
    """The touch key of an offer's message: one message per offer."""
    return f"{offer_id}:offer"


def waitlist_touch(
    event: WaitlistSlotOffered | WaitlistOfferClosed,
    touch: str,
    *,
    offer_expires_at: datetime | None = None,
) -> Touch:
    """The message of one waitlist offer: the offer itself, or the "it's gone" that follows."""
    return _touch(
        event,
        waitlist_touch_key(event.offer_id, touch),
        touch,
        # None even for an entry that moves a visit: a `C` or `R` must keep answering the
        # visit's own reminders, never the offer (the Y carries the offer id, found from
        # the touch key).
        appointment_id=None,
        start_at=event.start_at,
        offer_expires_at=offer_expires_at,
    )


def _touch(
    event: TouchEvent,
    touch_key: str,
    touch: str,
    *,
    appointment_id: str | None,
    start_at: datetime,
    offer_options: tuple[datetime, ...] | None = None,
    offer_expires_at: datetime | None = None,
) -> Touch:
    """The touch of a scheduling event: who, where and from which practice, as every one
    of them names it."""
    return Touch(
        touch_key=touch_key,
        touch=touch,
        org_id=event.org_id,
        patient_id=event.patient_id,
        appointment_id=appointment_id,
        location_id=event.location_id,
        practice_name=event.practice_name,
        sensitive_location=event.sensitive_location,
        start_at=start_at,
        time_zone=event.location_time_zone,
        offer_options=offer_options,
        offer_expires_at=offer_expires_at,
    )


def _expected(event: Event, kind: type[E]) -> E:
    """The event as the type its handler was registered for."""
    if not isinstance(event, kind):
        raise TypeError(f"expected {kind.__name__}, got {type(event).__name__}")
    return event


REMINDERS_CONSUMER = ConsumerSpec(
    name="reminders", topics=(SCHEDULING_TOPIC,), handlers=reminder_handlers
)
"""`ReminderDue`, `RescheduleOffered`, `WaitlistSlotOffered` and `WaitlistOfferClosed`
have handlers: every other scheduling event is skipped by the kit."""
