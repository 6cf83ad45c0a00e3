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
from careloop_messaging.patients_client import BatchContacts
from careloop_messaging.usecases.context import contact_source, settings_of
from careloop_messaging.usecases.reminders import (
    Touch,
    close_waitlist_offer,
    read_ahead_contacts,
    record_touch,
)


def reminder_handlers(runtime: Runtime) -> Mapping[str, Handler]:
    """Handlers of the reminders consumer, by event type."""
    settings = settings_of(runtime)

    batch: BatchContacts | None = None

    def batch_contacts() -> BatchContacts:
        nonlocal batch
        if batch is None:
            batch = BatchContacts(
                contact_source(runtime), concurrency=settings.patients_concurrency
            )
        return batch

    async def prepare(events: Sequence[tuple[Envelope, Event]]) -> None:
        """Read the batch's contacts before the kit opens the batch transaction."""
        contacts = batch_contacts()
        contacts.clear()
        wanted = [w for _, event in events if (w := _contact_wanted(event)) is not None]
        await read_ahead_contacts(runtime, contacts, wanted)

    async def record(session: AsyncSession, envelope: Envelope, touch: Touch) -> None:
        await record_touch(
            runtime,
            session,
            touch,
            batch_contacts(),
            causation_id=envelope.id,
            correlation_id=envelope.correlation_id,
        )

    async def on_reminder_due(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        if not isinstance(event, ReminderDue):
            raise TypeError(f"expected ReminderDue, got {type(event).__name__}")
        await record(
            session,
            envelope,
            Touch(
                touch_key=event.touch_key,
                touch=event.touch,
                org_id=event.org_id,
                patient_id=event.patient_id,
                appointment_id=event.appointment_id,
                location_id=event.location_id,
                practice_name=event.practice_name,
                sensitive_location=event.sensitive_location,
                start_at=event.start_at,
                time_zone=event.location_time_zone,
            ),
        )

    async def on_reschedule_offered(
        session: AsyncSession, envelope: Envelope, event: Event
    ) -> None:
        if not isinstance(event, RescheduleOffered):
            raise TypeError(f"expected RescheduleOffered, got {type(event).__name__}")
        await record(
            session,
            envelope,
            Touch(
                touch_key=offer_touch_key(event.offer_id),
                touch=OFFER_TOUCH,
                org_id=event.org_id,
                patient_id=event.patient_id,
                appointment_id=event.appointment_id,
                location_id=event.location_id,
                practice_name=event.practice_name,
                sensitive_location=event.sensitive_location,
                # The row needs a visit time and an offer has several: option 1 stands in.
                start_at=event.options[0],
                time_zone=event.location_time_zone,
                offer_options=tuple(event.options),
                offer_expires_at=event.expires_at,
            ),
        )

    async def on_waitlist_offered(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        if not isinstance(event, WaitlistSlotOffered):
            raise TypeError(f"expected WaitlistSlotOffered, got {type(event).__name__}")
        await record(
            session,
            envelope,
            waitlist_touch(event, WAITLIST_OFFER_TOUCH, offer_expires_at=event.expires_at),
        )

    async def on_waitlist_closed(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        if not isinstance(event, WaitlistOfferClosed):
            raise TypeError(f"expected WaitlistOfferClosed, got {type(event).__name__}")
        await close_waitlist_offer(
            runtime,
            session,
            offer_id=event.offer_id,
            reason=event.reason,
            gone=waitlist_touch(event, WAITLIST_CLOSED_TOUCH),
            contacts=batch_contacts(),
            causation_id=envelope.id,
            correlation_id=envelope.correlation_id,
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
    return Touch(
        touch_key=waitlist_touch_key(event.offer_id, touch),
        touch=touch,
        org_id=event.org_id,
        patient_id=event.patient_id,
        # None even for an entry that moves a visit: a `C` or `R` must keep answering the
        # visit's own reminders, never the offer (the Y carries the offer id, found from
        # the touch key).
        appointment_id=None,
        location_id=event.location_id,
        practice_name=event.practice_name,
        sensitive_location=event.sensitive_location,
        start_at=event.start_at,
        time_zone=event.location_time_zone,
        offer_expires_at=offer_expires_at,
    )


REMINDERS_CONSUMER = ConsumerSpec(
    name="reminders", topics=(SCHEDULING_TOPIC,), handlers=reminder_handlers
)
"""`ReminderDue`, `RescheduleOffered`, `WaitlistSlotOffered` and `WaitlistOfferClosed`
have handlers: every other scheduling event is skipped by the kit."""
