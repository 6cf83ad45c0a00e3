"""The rules consumer: the referral events rules may react to (on `careloop.referrals`:
stalls, escalations, leakage, stage changes, authorizations running out) go to
`usecases.from_events.apply_rules`, in the transaction of the kit's inbox mark; the
topic's other referral events are skipped."""

from __future__ import annotations

from careloop_kit.consumers import step_consumer
from careloop_tasks.usecases.from_events import apply_rules
from careloop_tasks.usecases.rules import RULE_EVENTS

REFERRALS_CONSUMER = step_consumer(
    "referrals", RULE_EVENTS, apply_rules, described_as="a referral event rules react to"
)
