"""The referral-relationships consumer: the referrals service's events that open and
move a referral (on `careloop.referrals`) go to
`usecases.care_relationships.apply_referral`, in the transaction of the kit's inbox mark,
so a redelivered event is a no-op. The topic's other events (stalls, authorizations,
access records) are skipped."""

from __future__ import annotations

from careloop_contracts.referrals import REFERRAL_LOOP_EVENTS
from careloop_kit.consumers import step_consumer
from careloop_patients.usecases.care_relationships import apply_referral

REFERRAL_RELATIONSHIPS_CONSUMER = step_consumer(
    "referral-relationships",
    REFERRAL_LOOP_EVENTS,
    apply_referral,
    described_as="a referral event",
)
