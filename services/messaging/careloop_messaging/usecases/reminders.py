"""The steps of the reminders consumer: a touch (a reminder, a reschedule offer, a
waitlist offer or the "that time is gone" that follows one) becomes one queued or skipped
message, chosen by the same rules (preferences, opt-outs; the contact budget for
unsolicited touches only).

The `touch_key` unique constraint refuses a second message for a touch published twice
under different event ids; the consumer's inbox covers a redelivered event.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import MessageSkipped
from careloop_kit.service import Runtime
from careloop_messaging.domain.outreach import (
    UNSOLICITED_EXEMPT_TOUCHES,
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
from careloop_messaging.patients_client import BatchContacts
from careloop_messaging.store.repository import Messages, NewMessage, OptOuts, RecipientCipher
from careloop_messaging.usecases.context import recipient_cipher, settings_of
from careloop_messaging.usecases.delivery import fail_message, message_ids


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
    requested_channel: Channel | None = None
    """The channel the asking service wants (a campaign step's), if the patient allows it."""

    @property
    def unsolicited(self) -> bool:
        return self.touch not in UNSOLICITED_EXEMPT_TOUCHES

    def message_fields(self) -> dict[str, Any]:
        """The fields of the message row the touch becomes (the row keeps the channel
        used, not the one asked for)."""
        fields = asdict(self)
        del fields["requested_channel"]
        return fields


async def read_ahead_contacts(
    runtime: Runtime, contacts: BatchContacts, wanted: Iterable[tuple[str, str, str]]
) -> None:
    """Read the contacts of these (touch key, org id, patient id) before a batch's
    transaction opens, leaving out touches that already have their message."""
    wanted = list(wanted)
    # A touch already handled needs no contact data: no read of patients for it.
    async with runtime.sessionmaker() as session:
        handled = await Messages(session).existing_touch_keys([key for key, _, _ in wanted])
    await contacts.load(touch for touch in wanted if touch[0] not in handled)


@dataclass(frozen=True)
class EventScope:
    """The consumed event's transaction, with what the messages it leads to need: the
    batch's contacts, and the event's ids for the events they publish."""

    runtime: Runtime
    session: AsyncSession
    contacts: BatchContacts
    causation_id: str | None
    correlation_id: str | None


async def record_touch(scope: EventScope, touch: Touch) -> None:
    """One queued or skipped message for the touch, unless it already has one."""
    runtime, session = scope.runtime, scope.session
    settings = settings_of(runtime)
    messages = Messages(session)
    # A touch already handled needs no contact data: skip the call to patients.
    if await messages.touch_exists(touch.touch_key):
        return
    cipher = recipient_cipher(runtime)
    # Normally read ahead by `prepare`; otherwise read here, inside the transaction
    # (one pooled connection held for at most patients_timeout_s). A failure raises:
    # the kit retries with backoff, then dead-letters the event.
    contact = await scope.contacts.contact(touch.touch_key, touch.org_id, touch.patient_id)
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
            requested=touch.requested_channel,
        )
    message_id = str(uuid.uuid4())
    recipient = decision.recipient
    channel: Channel | None = recipient.channel if recipient else None
    if channel is None and contact.preferred_channel is not None:
        channel = contact.preferred_channel
    sealed = (
        await cipher.seal(session, touch.org_id, message_id, recipient.address)
        if recipient
        else None
    )
    new = NewMessage(
        id=message_id,
        **touch.message_fields(),
        language=contact.language or "en",
        status=MessageStatus.QUEUED if recipient else MessageStatus.SKIPPED,
        channel=channel,
        skip_reason=decision.skip.value if decision.skip else None,
        recipient_ct=sealed,
        recipient_index=cipher.index(touch.org_id, recipient) if recipient else None,
        recipient_lookup=cipher.lookup(recipient) if recipient else None,
    )
    if await messages.add(new, now=now) and decision.skip is not None:
        skipped = MessageSkipped(
            **message_ids(new),
            channel=channel.value if channel else None,
            reason=decision.skip.value,
            occurred_at=now,
        )
        await runtime.outbox.add(
            session,
            skipped,
            org_id=touch.org_id,
            location_id=touch.location_id,
            causation_id=scope.causation_id,
            correlation_id=scope.correlation_id,
        )


async def close_waitlist_offer(
    scope: EventScope, *, offer_id: str, reason: str, gone: Touch
) -> None:
    """A closed waitlist offer: an offer message still queued must not go out; one the
    patient saw is followed by `gone` when the reason is one the patient is told."""
    runtime, session = scope.runtime, scope.session
    messages = Messages(session)
    # Same partition (the patient's) as the offer event, which came first: its
    # message row exists unless the offer produced none.
    offer = await messages.by_touch_key(
        waitlist_touch_key(offer_id, WAITLIST_OFFER_TOUCH), for_update=True
    )
    if offer is None:
        return
    if offer.status is MessageStatus.QUEUED:
        # Closed before it went out (retries): it must not go out now, and a "gone"
        # message about an offer never seen would only puzzle the patient.
        error = f"offer closed before sending ({reason})"
        await fail_message(runtime, session, offer, offer.attempts, error)
        return
    if reason not in WAITLIST_NOTIFIED_REASONS:
        return
    if offer.status not in (MessageStatus.SENT, MessageStatus.DELIVERED):
        return  # skipped or failed: the patient never saw the offer
    await record_touch(scope, gone)
