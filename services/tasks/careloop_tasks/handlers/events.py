"""The rules consumers: the events rules may react to go to
`usecases.from_events.apply_rules`, in the transaction of the kit's inbox mark; the
topics' other events are skipped. One consumer per topic: the referral events (on
`careloop.referrals`: stalls, escalations, leakage, stage changes, authorizations running
out), the messaging ones (on `careloop.messaging`: a patient asking for a call) and the
care-gap ones (on `careloop.caregaps`: outreach the patient never answered)."""

from __future__ import annotations

from careloop_kit.consumers import step_consumer
from careloop_tasks.usecases.from_events import apply_rules
from careloop_tasks.usecases.rules import (
    CAREGAP_RULE_EVENTS,
    MESSAGING_RULE_EVENTS,
    REFERRAL_RULE_EVENTS,
)

REFERRALS_CONSUMER = step_consumer(
    "referrals", REFERRAL_RULE_EVENTS, apply_rules, described_as="a referral event rules react to"
)
MESSAGING_CONSUMER = step_consumer(
    "messaging", MESSAGING_RULE_EVENTS, apply_rules, described_as="a messaging event rules react to"
)
CAREGAPS_CONSUMER = step_consumer(
    "caregaps", CAREGAP_RULE_EVENTS, apply_rules, described_as="a care-gap event rules react to"
)
