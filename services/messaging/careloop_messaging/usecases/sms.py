"""What an SMS webhook changes: a delivery status reported by Twilio, and a patient's
keyword reply (STOP / START, C / R, an offered option's number, Y for a waitlist offer).

The door verifies the signature and parses the form; these steps run in the request's
transaction and stage their events and audit records there.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.messaging import ReplyIntentV2
from careloop_kit.audit import AuditEntry, recorder_of
from careloop_kit.auth import Principal
from careloop_kit.service import Runtime
from careloop_messaging.domain.outreach import (
    MessageStatus,
    Recipient,
    message_kind,
    valid_choice,
)
from careloop_messaging.domain.templates import Channel, MessageKind
from careloop_messaging.store.repository import (
    Messages,
    OptOuts,
    RecipientCipher,
    StoredMessage,
)
from careloop_messaging.usecases.context import recipient_cipher
from careloop_messaging.usecases.delivery import publish_failed
from careloop_messaging.usecases.replies import Reply, publish_reply

Consent = Literal["opt_out", "opt_in"]

# Twilio's callbacks may arrive out of order ("sent" after "delivered"): only these
# transitions are applied, so a late callback never moves a message backwards.
_UPDATABLE = {MessageStatus.QUEUED, MessageStatus.SENT}


async def record_delivery_status(
    runtime: Runtime,
    session: AsyncSession,
    *,
    provider_id: str,
    status: Literal[MessageStatus.DELIVERED, MessageStatus.FAILED],
    error: str | None,
) -> None:
    """Apply a provider's delivered / failed report to the message it sent; an unknown
    provider id, or a message already past `sent`, is left alone."""
    messages = Messages(session)
    stored = await messages.by_provider_id(provider_id)
    if stored is None or stored.status not in _UPDATABLE:
        return
    now = runtime.clock.now()
    await messages.set_status(stored.id, status, error=error, now=now)
    if status is MessageStatus.FAILED:
        reason = error or "provider reported a failure"
        await publish_failed(runtime, session, stored, attempts=stored.attempts, reason=reason)


async def receive_sms_reply(
    runtime: Runtime,
    session: AsyncSession,
    *,
    reply_id: str,
    phone: str,
    accepting: bool,
    consent: Consent | None,
    intent: ReplyIntentV2 | None,
    choice: int | None,
) -> None:
    """Act on a keyword texted from `phone`: `accepting` (Y / YES) takes the waitlist
    offer that was the number's latest message; `consent` opts the number out of (or
    back into) texts from every organization that messaged it; `intent` (confirm,
    reschedule) or an option number `choice` answers the latest message about an
    appointment sent to the number."""
    cipher = recipient_cipher(runtime)
    recipient = Recipient(Channel.SMS, phone)
    lookup = cipher.lookup(recipient)
    messages = Messages(session)
    now = runtime.clock.now()
    if accepting:
        offer = await _waitlist_offer_answered(session, cipher, messages, recipient, lookup)
        if offer is not None:
            await _reply(runtime, session, offer, Reply(reply_id, "accept", None, "sms", now))
            return
    if consent is not None:
        # The carrier-level STOP covers our number, whoever sent through it: every
        # organization that messaged this phone stops (or resumes) texting it.
        opt_outs = OptOuts(session)
        for org_id in sorted(await messages.orgs_that_messaged(Channel.SMS, lookup)):
            index = cipher.index(org_id, recipient)
            if consent == "opt_out":
                await opt_outs.add(org_id, Channel.SMS, index, now)
            else:
                await opt_outs.remove(org_id, Channel.SMS, index)
            await _audit_reply(runtime, session, org_id, None, "Consent", reply_id)
        return
    answered = await messages.latest_answerable(Channel.SMS, lookup)
    if answered is None or answered.appointment_id is None:
        return
    if intent is None and choice is not None and _picks_an_option(answered, choice):
        intent = "choose"
    else:
        choice = None
    if intent is not None:
        await _reply(runtime, session, answered, Reply(reply_id, intent, choice, "sms", now))


async def _audit_reply(
    runtime: Runtime,
    session: AsyncSession,
    org_id: str,
    patient_id: str | None,
    resource_type: str,
    reply_id: str,
) -> None:
    """A patient's keyword reply is a disclosure by the patient (a reply to a reminder,
    or a change of consent to be texted): audited with the patient as the actor when
    known, in the reply's own transaction."""
    who = Principal(
        actor_id=patient_id or "sms-sender",
        actor_type="patient" if patient_id else "system",
        org_id=org_id,
    )
    entry = AuditEntry(
        action="create" if resource_type == "Communication" else "update",
        resource_type=resource_type,
        phi_categories=["contact"],
        patient_id=patient_id,
        resource_id=reply_id,
    )
    await recorder_of(runtime).record(session, who, entry)


async def _reply(
    runtime: Runtime, session: AsyncSession, answered: StoredMessage, reply: Reply
) -> None:
    """`reply.received.v2` for the answered message, audited in the same transaction."""
    await publish_reply(runtime, session, answered, reply)
    await _audit_reply(
        runtime, session, answered.org_id, answered.patient_id, "Communication", reply.reply_id
    )


async def _waitlist_offer_answered(
    session: AsyncSession,
    cipher: RecipientCipher,
    messages: Messages,
    recipient: Recipient,
    lookup: str,
) -> StoredMessage | None:
    """The waitlist offer a Y / YES answers: the number's latest message, if it is one
    and the number has not opted out of texts from its organization (then YES means
    START). An expired offer is still answered: scheduling owns the offer and tells the
    patient the time is gone."""
    latest = await messages.latest_sent(Channel.SMS, lookup)
    if latest is None or message_kind(latest.touch) is not MessageKind.WAITLIST_OFFER:
        return None
    index = cipher.index(latest.org_id, recipient)
    if await OptOuts(session).indexes(latest.org_id, Channel.SMS, [index]):
        return None
    return latest


def _picks_an_option(answered: StoredMessage, choice: int) -> bool:
    """A number answers only a reschedule offer, and only one of the options it listed;
    after anything else it is free text ("2" after a reminder means nothing to us).
    An expired offer's choice is still passed on: scheduling owns the offer and its
    expiry, and refuses it there."""
    if message_kind(answered.touch) is not MessageKind.RESCHEDULE_OFFER:
        return False
    return valid_choice(choice, answered.offer_options or ())
