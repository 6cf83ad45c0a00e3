"""The `reminders` consumer: each `ReminderDue`, `RescheduleOffered` and
`WaitlistSlotOffered` becomes one queued or skipped message, chosen by the same rules
(preferences, opt-outs; the contact budget for unsolicited touches only); a
`WaitlistOfferClosed` becomes at most one "that time is gone" message.

The kit's consumer records the event id in the inbox in the same transaction as the
message row, so a redelivered event is a no-op; the `touch_key` unique constraint also
refuses a second message for a touch published twice under different event ids.

Contact data comes from the patients service. The kit calls `prepare` with each batch
before it opens the batch transaction: the contacts of the batch's patients are read
then, once per patient and several at a time (`patients_concurrency`), skipping touches
that already have their message. Inside the transaction `record` only looks them up.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import (
    Envelope,
    Event,
    MessageSkipped,
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
    UNSOLICITED_EXEMPT_TOUCHES,
    WAITLIST_CLOSED_TOUCH,
    WAITLIST_NOTIFIED_REASONS,
    WAITLIST_OFFER_TOUCH,
    ContactData,
    Decision,
    MessageStatus,
    Recipient,
    SkipReason,
    candidate_recipients,
    decide,
    waitlist_touch_key,
)
from careloop_messaging.domain.templates import Channel
from careloop_messaging.handlers.delivery import publish_failed
from careloop_messaging.patients_client import BatchContacts, ContactSource
from careloop_messaging.settings import MessagingSettings
from careloop_messaging.store.repository import Messages, NewMessage, OptOuts, RecipientCipher

CONTACTS_KEY = "contacts"
CIPHER_KEY = "cipher"


async def _opted_out(
    session: AsyncSession, cipher: RecipientCipher, org_id: str, recipients: list[Recipient]
) -> set[Recipient]:
    found: set[Recipient] = set()
    for channel in {r.channel for r in recipients}:
        mine = [r for r in recipients if r.channel is channel]
        by_index = {cipher.index(org_id, r): r for r in mine}
        hits = await OptOuts(session).indexes(org_id, channel, list(by_index))
        found |= {by_index[i] for i in hits}
    return found


@dataclass(frozen=True)
class Touch:
    """What one incoming event asks to be sent: the fields of a message row."""

    touch_key: str
    touch: str
    org_id: str
    patient_id: str
    appointment_id: str | None
    location_id: str
    practice_name: str
    sensitive_location: bool
    start_at: datetime
    time_zone: str
    offer_options: tuple[datetime, ...] | None = None
    offer_expires_at: datetime | None = None

    @property
    def unsolicited(self) -> bool:
        return self.touch not in UNSOLICITED_EXEMPT_TOUCHES


def reminder_handlers(runtime: Runtime) -> Mapping[str, Handler]:
    """Handlers of the reminders consumer, by event type."""
    settings = runtime.settings
    assert isinstance(settings, MessagingSettings)

    batch: BatchContacts | None = None

    def batch_contacts() -> BatchContacts:
        nonlocal batch
        if batch is None:
            source: ContactSource = runtime.state[CONTACTS_KEY]
            batch = BatchContacts(source, concurrency=settings.patients_concurrency)
        return batch

    async def prepare(events: Sequence[tuple[Envelope, Event]]) -> None:
        """Read the batch's contacts before the kit opens the batch transaction."""
        contacts = batch_contacts()
        contacts.clear()
        wanted = [w for _, event in events if (w := _contact_wanted(event)) is not None]
        # A touch already handled needs no contact data: no read of patients for it.
        async with runtime.sessionmaker() as session:
            handled = await Messages(session).existing_touch_keys([key for key, _, _ in wanted])
        await contacts.load(touch for touch in wanted if touch[0] not in handled)

    async def record(session: AsyncSession, envelope: Envelope, touch: Touch) -> None:
        """One queued or skipped message for the touch, unless it already has one."""
        messages = Messages(session)
        # A touch already handled needs no contact data: skip the call to patients.
        if await messages.touch_exists(touch.touch_key):
            return
        cipher: RecipientCipher = runtime.state[CIPHER_KEY]
        # Normally read ahead by `prepare`; otherwise read here, inside the transaction
        # (one pooled connection held for at most patients_timeout_s). A failure raises:
        # the kit retries with backoff, then dead-letters the event.
        contact = await batch_contacts().contact(touch.touch_key, touch.org_id, touch.patient_id)
        now = runtime.clock.now()
        await messages.lock_patient(touch.org_id, touch.patient_id)
        if contact is None:
            decision = Decision.skipped(SkipReason.PATIENT_NOT_FOUND)
            contact = ContactData([], [], [], None, False)
        else:
            candidates = candidate_recipients(
                contact, default_country_code=settings.default_country_code
            )
            opted = await _opted_out(session, cipher, touch.org_id, candidates)
            decision = decide(
                contact,
                opted_out=lambda r: r in opted,
                sent_this_week=(
                    await messages.count_automated_since(touch.org_id, touch.patient_id, now)
                    if touch.unsolicited
                    else 0
                ),
                budget_per_week=settings.contact_budget_per_week,
                default_country_code=settings.default_country_code,
            )
        message_id = str(uuid.uuid4())
        recipient = decision.recipient
        channel: Channel | None = recipient.channel if recipient else None
        if channel is None and contact.preferred_channel is not None:
            channel = contact.preferred_channel
        added = await messages.add(
            NewMessage(
                id=message_id,
                org_id=touch.org_id,
                patient_id=touch.patient_id,
                appointment_id=touch.appointment_id,
                location_id=touch.location_id,
                touch_key=touch.touch_key,
                touch=touch.touch,
                language=contact.language or "en",
                practice_name=touch.practice_name,
                sensitive_location=touch.sensitive_location,
                start_at=touch.start_at,
                time_zone=touch.time_zone,
                status=MessageStatus.QUEUED if recipient else MessageStatus.SKIPPED,
                channel=channel,
                skip_reason=decision.skip.value if decision.skip else None,
                recipient_ct=(
                    cipher.encrypt(touch.org_id, message_id, recipient.address)
                    if recipient
                    else None
                ),
                recipient_index=cipher.index(touch.org_id, recipient) if recipient else None,
                recipient_lookup=cipher.lookup(recipient) if recipient else None,
                offer_options=touch.offer_options,
                offer_expires_at=touch.offer_expires_at,
            ),
            now=now,
        )
        if added and decision.skip is not None:
            await runtime.outbox.add(
                session,
                MessageSkipped(
                    message_id=message_id,
                    org_id=touch.org_id,
                    patient_id=touch.patient_id,
                    appointment_id=touch.appointment_id,
                    touch_key=touch.touch_key,
                    channel=channel.value if channel else None,
                    reason=decision.skip.value,
                    occurred_at=now,
                ),
                org_id=touch.org_id,
                location_id=touch.location_id,
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
        messages = Messages(session)
        # Same partition (the patient's) as the offer event, which came first: its
        # message row exists unless the offer produced none.
        offer = await messages.by_touch_key(
            waitlist_touch_key(event.offer_id, WAITLIST_OFFER_TOUCH), for_update=True
        )
        if offer is None:
            return
        now = runtime.clock.now()
        if offer.status is MessageStatus.QUEUED:
            # Closed before it went out (retries): it must not go out now, and a "gone"
            # message about an offer never seen would only puzzle the patient.
            error = f"offer closed before sending ({event.reason})"
            await messages.mark_failed(offer.id, attempts=offer.attempts, error=error, now=now)
            await publish_failed(runtime, session, offer, attempts=offer.attempts, reason=error)
            return
        if event.reason not in WAITLIST_NOTIFIED_REASONS:
            return
        if offer.status not in (MessageStatus.SENT, MessageStatus.DELIVERED):
            return  # skipped or failed: the patient never saw the offer
        await record(session, envelope, waitlist_touch(event, WAITLIST_CLOSED_TOUCH))

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
