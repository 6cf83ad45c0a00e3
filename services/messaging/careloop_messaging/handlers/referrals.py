"""The `referral-contacts` consumer: each `ReferralContactRequested` (an inbound referral
waiting for the patient to book) becomes one queued or skipped message, chosen by the
same rules as a reminder (preferences, opt-outs, the contact budget:
`usecases.reminders.record_touch`). The message says only that a referral is ready to
be booked, with a secure link that offers a call back (`usecases.links`).

The referral's contact key is the touch key, so a referral that asks again (it came
back to the stage) gets a new message and a redelivered or republished request does not.
The patient's contact data is read before the batch transaction, as for reminders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import Envelope, Event, ReferralContactRequested
from careloop_contracts.referrals import TOPIC as REFERRALS_TOPIC
from careloop_kit.bus.consumer import Handler, Prepared
from careloop_kit.service import ConsumerSpec, Runtime
from careloop_messaging.domain.outreach import REFERRAL_CONTACT_TOUCH
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


def referral_contact_handlers(runtime: Runtime) -> Mapping[str, Handler]:
    batch_contacts = batch_contacts_for(runtime)

    async def prepare(events: Sequence[tuple[Envelope, Event]]) -> None:
        contacts = batch_contacts()
        contacts.clear()
        wanted = [
            (event.contact_key, event.org_id, event.patient_id)
            for _, event in events
            if isinstance(event, ReferralContactRequested)
        ]
        await read_ahead_contacts(runtime, contacts, wanted)

    async def on_contact_requested(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        if not isinstance(event, ReferralContactRequested):
            raise TypeError(f"expected a contact request, got {type(event).__name__}")
        scope = EventScope(runtime, session, batch_contacts(), envelope.id, envelope.correlation_id)
        await record_touch(scope, referral_touch(event))

    return {ReferralContactRequested.event_type: Prepared(on_contact_requested, prepare)}


REFERRAL_CONTACTS_CONSUMER = ConsumerSpec(
    name="referral-contacts", topics=(REFERRALS_TOPIC,), handlers=referral_contact_handlers
)
"""Only `ReferralContactRequested` has a handler: the topic's other referral events are
skipped by the kit."""
