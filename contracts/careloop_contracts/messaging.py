"""Events of the messaging service (topic ``careloop.messaging``, keyed by patient id).

They say what happened to one outbound message: ids, channel, status and a reason code.
Never the address it went to, nor its body: consumers that need more ask the messaging
API, which audits the access.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from careloop_contracts.base import Event, Id, UtcDatetime

TOPIC = "careloop.messaging"

ChannelName = Literal["sms", "email", "portal"]


class MessageEvent(Event):
    """The snapshot every message event carries (abstract)."""

    message_id: Id = Field(description="Id of the message (messaging's own).")
    org_id: Id = Field(description="Organization (tenant) the message was sent for.")
    patient_id: Id = Field(description="Id of the patient the message is for.")
    appointment_id: Id | None = Field(
        default=None, description="Appointment the message is about, if any."
    )
    touch_key: Id = Field(description="The reminder touch that asked for the message.")
    channel: ChannelName | None = Field(description="Channel used or chosen; None if none fits.")
    occurred_at: UtcDatetime = Field(description="When the change was committed (UTC).")


class MessageSent(MessageEvent):
    """Emitted when a provider accepted a message (Twilio queued it, the SMTP relay
    accepted it). Delivery to the handset or mailbox may still fail later."""

    event_type = "careloop.messaging.message.sent.v1"
    topic = TOPIC

    status: Literal["sent"] = Field(default="sent", description="Always `sent`.")
    attempts: int = Field(ge=1, description="Attempts it took, this one included.")


class MessageFailed(MessageEvent):
    """Emitted when a message will not reach the patient: the provider refused it for
    good, retries ran out, or the carrier reported it undelivered."""

    event_type = "careloop.messaging.message.failed.v1"
    topic = TOPIC

    status: Literal["failed"] = Field(default="failed", description="Always `failed`.")
    reason: str = Field(
        max_length=200,
        description="Provider status and error code (e.g. `Twilio HTTP 400, code 21211`); "
        "never the address or the text.",
    )
    attempts: int = Field(ge=0, description="Attempts made.")


SkipReason = Literal[
    "opted_out",
    "no_allowed_channel",
    "automated_not_allowed",
    "contact_budget",
    "patient_not_found",
]


class MessageSkipped(MessageEvent):
    """Emitted when a reminder touch produced no message by design: the patient opted
    out, allows no channel we can reach, refuses automated messages, or has had as many
    automated contacts this week as the contact budget allows."""

    event_type = "careloop.messaging.message.skipped.v1"
    topic = TOPIC

    status: Literal["skipped"] = Field(default="skipped", description="Always `skipped`.")
    reason: SkipReason = Field(description="Why no message was sent.")


ReplyIntent = Literal["confirm", "reschedule", "choose"]


class ReplyReceived(Event):
    """Emitted when a patient answers a message with a keyword: `C` (confirm), `R`
    (reschedule) or the number of an offered option (`choose`, after a reschedule offer).
    The reply is matched to the latest message sent to that number, so it names that
    message's appointment. Carries no address and no text beyond the intent. Scheduling
    confirms the appointment, offers open slots, or rebooks into the chosen one."""

    event_type = "careloop.messaging.reply.received.v1"
    topic = TOPIC

    reply_id: Id = Field(description="Id of the inbound message (the provider's id).")
    org_id: Id = Field(description="Organization (tenant) of the answered message.")
    patient_id: Id = Field(description="The patient the answered message was sent to.")
    appointment_id: Id = Field(description="The appointment the answered message was about.")
    message_id: Id = Field(description="The outbound message that was answered.")
    intent: ReplyIntent = Field(description="What the patient asked for.")
    choice: int | None = Field(
        default=None, ge=1, le=9, description="For `choose`: the option number replied."
    )
    channel: ChannelName = Field(description="Channel the reply came in on.")
    received_at: UtcDatetime = Field(description="When the reply was received (UTC).")


ReplyIntentV2 = Literal["confirm", "reschedule", "choose", "cancel", "accept"]
ReplyVia = Literal["sms", "email", "portal", "link"]


class ReplyReceivedV2(Event):
    """Emitted when a patient answers a message: a keyword by SMS (`C` confirm, `R`
    reschedule, the number of an offered option, `Y` to take a waitlist slot) or a tap on
    the message's secure one-time link (confirm, cancel, reschedule). Replaces
    `reply.received.v1`, which could name neither a cancel, nor a waitlist answer, nor a
    link; scheduling still accepts v1 records left on the topic.

    The answer is matched to one outbound message, so it names that message's
    appointment (a reminder or a reschedule offer) or its waitlist offer. Carries no
    address and no text beyond the intent."""

    event_type = "careloop.messaging.reply.received.v2"
    topic = TOPIC

    reply_id: Id = Field(
        description="Id of the answer: the provider's id of an inbound SMS, or messaging's "
        "own id of a link action."
    )
    org_id: Id = Field(description="Organization (tenant) of the answered message.")
    patient_id: Id = Field(description="The patient the answered message was sent to.")
    message_id: Id = Field(description="The outbound message that was answered.")
    appointment_id: Id | None = Field(
        default=None,
        description="The appointment the answered message was about; None for a waitlist "
        "offer to a patient without one.",
    )
    offer_id: Id | None = Field(
        default=None,
        description="The offer the answered message carried (a waitlist offer), if any.",
    )
    intent: ReplyIntentV2 = Field(description="What the patient asked for.")
    choice: int | None = Field(
        default=None, ge=1, le=9, description="For `choose`: the option number replied."
    )
    via: ReplyVia = Field(description="How the answer came: a channel, or the secure link.")
    received_at: UtcDatetime = Field(description="When the answer was received (UTC).")


class CallbackRequested(Event):
    """Emitted when a patient taps "please call me" on the secure link of a message that
    asks them to book something they cannot book online (a referral waiting to be
    scheduled): someone at the location should phone them. Tasks opens one call-back task
    per message. Carries no address and no text: staff find the number in the record."""

    event_type = "careloop.messaging.callback.requested.v1"
    topic = TOPIC

    request_id: Id = Field(description="Messaging's own id of the link action.")
    org_id: Id = Field(description="Organization (tenant) of the answered message.")
    location_id: Id = Field(description="Location that sent the message: its staff call.")
    patient_id: Id = Field(description="The patient to call.")
    message_id: Id = Field(description="The message whose link was used.")
    subject_kind: Literal["referral"] = Field(description="What the message was about.")
    subject_id: Id = Field(description="Id of that subject (the referral).")
    requested_at: UtcDatetime = Field(description="When the patient asked (UTC).")
