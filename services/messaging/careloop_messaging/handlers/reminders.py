"""The `reminders` consumer: each `ReminderDue` becomes one queued or skipped message.

The kit's consumer records the event id in the inbox in the same transaction as the
message row, so a redelivered event is a no-op; the `touch_key` unique constraint also
refuses a second message for a touch published twice under different event ids.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import Envelope, Event, MessageSkipped, ReminderDue
from careloop_contracts.scheduling import TOPIC as SCHEDULING_TOPIC
from careloop_kit.bus.consumer import Handler
from careloop_kit.service import ConsumerSpec, Runtime
from careloop_messaging.domain.outreach import (
    ContactData,
    Decision,
    MessageStatus,
    Recipient,
    SkipReason,
    candidate_recipients,
    decide,
)
from careloop_messaging.domain.templates import Channel
from careloop_messaging.patients_client import ContactSource
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


def reminder_handlers(runtime: Runtime) -> Mapping[str, Handler]:
    """Handlers of the reminders consumer, by event type."""
    settings = runtime.settings
    assert isinstance(settings, MessagingSettings)

    async def on_reminder_due(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        if not isinstance(event, ReminderDue):
            raise TypeError(f"expected ReminderDue, got {type(event).__name__}")
        messages = Messages(session)
        # A touch already handled needs no contact data: skip the call to patients.
        if await messages.touch_exists(event.touch_key):
            return
        contacts: ContactSource = runtime.state[CONTACTS_KEY]
        cipher: RecipientCipher = runtime.state[CIPHER_KEY]
        # The kit opens the transaction (inbox row first) before calling us, so this
        # read holds one pooled connection for at most patients_timeout_s. A failure
        # raises: the kit retries with backoff, then dead-letters the event.
        contact = await contacts.contact(event.org_id, event.patient_id)
        now = runtime.clock.now()
        await messages.lock_patient(event.org_id, event.patient_id)
        if contact is None:
            decision = Decision.skipped(SkipReason.PATIENT_NOT_FOUND)
            contact = ContactData([], [], [], None, False)
        else:
            candidates = candidate_recipients(
                contact, default_country_code=settings.default_country_code
            )
            opted = await _opted_out(session, cipher, event.org_id, candidates)
            decision = decide(
                contact,
                opted_out=lambda r: r in opted,
                sent_this_week=await messages.count_automated_since(
                    event.org_id, event.patient_id, now
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
                org_id=event.org_id,
                patient_id=event.patient_id,
                appointment_id=event.appointment_id,
                location_id=event.location_id,
                touch_key=event.touch_key,
                touch=event.touch,
                language=contact.language or "en",
                practice_name=event.practice_name,
                sensitive_location=event.sensitive_location,
                start_at=event.start_at,
                time_zone=event.location_time_zone,
                # Opaque and random: the link names no patient or appointment, and the
                # page behind it asks the patient to sign in.
                link_token=secrets.token_urlsafe(24),
                status=MessageStatus.QUEUED if recipient else MessageStatus.SKIPPED,
                channel=channel,
                skip_reason=decision.skip.value if decision.skip else None,
                recipient_ct=(
                    cipher.encrypt(event.org_id, message_id, recipient.address)
                    if recipient
                    else None
                ),
                recipient_index=cipher.index(event.org_id, recipient) if recipient else None,
                recipient_lookup=cipher.lookup(recipient) if recipient else None,
            ),
            now=now,
        )
        if added and decision.skip is not None:
            await runtime.outbox.add(
                session,
                MessageSkipped(
                    message_id=message_id,
                    org_id=event.org_id,
                    patient_id=event.patient_id,
                    appointment_id=event.appointment_id,
                    touch_key=event.touch_key,
                    channel=channel.value if channel else None,
                    reason=decision.skip.value,
                    occurred_at=now,
                ),
                org_id=event.org_id,
                location_id=event.location_id,
                causation_id=envelope.id,
                correlation_id=envelope.correlation_id,
            )

    return {ReminderDue.event_type: on_reminder_due}


REMINDERS_CONSUMER = ConsumerSpec(
    name="reminders", topics=(SCHEDULING_TOPIC,), handlers=reminder_handlers
)
"""Only `ReminderDue` has a handler: every other scheduling event is skipped by the kit."""
