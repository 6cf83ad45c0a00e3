"""Other services asking messaging to contact a patient on their behalf, one consumer
group per asking stream:

- `referral-contacts`: each `ReferralContactRequested` (an inbound referral waiting for
  the patient to book) says only that a referral is ready to be booked, with a secure
  link that offers a call back (`usecases.links`).
- `caregap-outreach`: each `OutreachRequested` (a step of a care-gap campaign) says only
  that it is time for a check-up, with a secure link that says to call the practice; on
  the channel the step names when the patient's choices allow it.

Both go through the same steps as a reminder (`usecases.reminders.record_touch`:
preferences, opt-outs, the contact budget, the neutral sender of a sensitive location)
and become one queued or skipped message. The request's key (`contact_key`,
`outreach_key`) is the touch key, so a redelivered or republished request sends nothing
twice while a new key (a referral back at the stage, the campaign's next step) does.
The patient's contact data is read before the batch transaction, as for reminders.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import Envelope, Event, OutreachRequested, ReferralContactRequested
from careloop_kit.bus.consumer import Handler, Prepared
from careloop_kit.service import ConsumerSpec, Runtime
from careloop_messaging.domain.outreach import CAREGAP_OUTREACH_TOUCH, REFERRAL_CONTACT_TOUCH
from careloop_messaging.domain.templates import Channel
from careloop_messaging.usecases.context import batch_contacts_for
from careloop_messaging.usecases.reminders import (
    EventScope,
    Touch,
    read_ahead_contacts,
    record_touch,
)


def referral_touch(requested: ReferralContactRequested) -> Touch:
    """The message a contact request asks for. No appointment yet: the row's visit time
    is when the link lapses, and so is its offer expiry (a link is never sent late)."""
    return Touch(
        touch_key=requested.contact_key,
        touch=REFERRAL_CONTACT_TOUCH,
        org_id=requested.org_id,
        patient_id=requested.patient_id,
        appointment_id=None,
        location_id=requested.location_id,
        practice_name=requested.practice_name,
        sensitive_location=requested.sensitive_location,
        start_at=requested.respond_by,
        time_zone=requested.location_time_zone,
        offer_expires_at=requested.respond_by,
    )


def outreach_touch(requested: OutreachRequested) -> Touch:
    """The message a care-gap outreach step asks for: as a referral's, its link lapses
    when the step's answer is due (the campaign's next step or a coordinator's task
    follows then, with a link of its own)."""
    return Touch(
        touch_key=requested.outreach_key,
        touch=CAREGAP_OUTREACH_TOUCH,
        org_id=requested.org_id,
        patient_id=requested.patient_id,
        appointment_id=None,
        location_id=requested.location_id,
        practice_name=requested.practice_name,
        sensitive_location=requested.sensitive_location,
        start_at=requested.respond_by,
        time_zone=requested.location_time_zone,
        offer_expires_at=requested.respond_by,
        requested_channel=Channel(requested.channel) if requested.channel else None,
    )


E = TypeVar("E", bound=Event)


def _one_touch_each(
    kind: type[E], touch_of: Callable[[E], Touch]
) -> Callable[[Runtime], Mapping[str, Handler]]:
    """Handlers that turn each `kind` event into the one message `touch_of` describes."""

    def handlers(runtime: Runtime) -> Mapping[str, Handler]:
        batch_contacts = batch_contacts_for(runtime)

        async def prepare(events: Sequence[tuple[Envelope, Event]]) -> None:
            contacts = batch_contacts()
            contacts.clear()
            touches = [touch_of(event) for _, event in events if isinstance(event, kind)]
            await read_ahead_contacts(
                runtime, contacts, [(t.touch_key, t.org_id, t.patient_id) for t in touches]
            )

        async def on_request(session: AsyncSession, envelope: Envelope, event: Event) -> None:
            if not isinstance(event, kind):
                raise TypeError(f"expected {kind.__name__}, got {type(event).__name__}")
            scope = EventScope(
                runtime, session, batch_contacts(), envelope.id, envelope.correlation_id
            )
            await record_touch(scope, touch_of(event))

        return {kind.event_type: Prepared(on_request, prepare)}

    return handlers


REFERRAL_CONTACTS_CONSUMER = ConsumerSpec(
    name="referral-contacts",
    topics=(ReferralContactRequested.topic,),
    handlers=_one_touch_each(ReferralContactRequested, referral_touch),
)
"""Only `ReferralContactRequested` has a handler: the topic's other referral events are
skipped by the kit."""

CAREGAP_OUTREACH_CONSUMER = ConsumerSpec(
    name="caregap-outreach",
    topics=(OutreachRequested.topic,),
    handlers=_one_touch_each(OutreachRequested, outreach_touch),
)
"""Only `OutreachRequested` has a handler: gap events and `OutreachUnanswered` (a task,
not a message) are skipped by the kit."""
