"""The rules in force for an organization: its own set when it saved one, else the
defaults shipped with the service (`default_rules.json`, validated at start-up)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

from careloop_contracts import Event
from careloop_contracts.caregaps import OutreachUnanswered
from careloop_contracts.messaging import CallbackRequested
from careloop_contracts.referrals import (
    AuthorizationExpiring,
    ReferralEscalated,
    ReferralLeaked,
    ReferralStageChanged,
    ReferralStalled,
)
from careloop_kit.context import RequestContext
from careloop_kit.service import Runtime
from careloop_tasks.domain.rules import InvalidRules, RuleSet, parse_rules
from careloop_tasks.store.repository import Repositories
from careloop_tasks.store.rules import RuleSetRepository
from careloop_tasks.usecases.common import InvalidRuleSet

REFERRAL_RULE_EVENTS: tuple[type[Event], ...] = (
    ReferralStalled,
    ReferralEscalated,
    ReferralLeaked,
    ReferralStageChanged,
    AuthorizationExpiring,
)
"""The referral events rules may react to (one consumer on `careloop.referrals`)."""
MESSAGING_RULE_EVENTS: tuple[type[Event], ...] = (CallbackRequested,)
"""The messaging events rules may react to (one consumer on `careloop.messaging`)."""
CAREGAP_RULE_EVENTS: tuple[type[Event], ...] = (OutreachUnanswered,)
"""The care-gap events rules may react to (one consumer on `careloop.caregaps`)."""
RULE_EVENTS = REFERRAL_RULE_EVENTS + MESSAGING_RULE_EVENTS + CAREGAP_RULE_EVENTS
"""The events rules may react to: the ones the service consumes."""
KNOWN_EVENTS = frozenset(kind.event_type for kind in RULE_EVENTS)
DEFAULTS_KEY = "default_rules"

Context = RequestContext[Repositories]


@dataclass(frozen=True)
class RulesView:
    document: dict[str, Any]
    version: int
    """0: the shipped defaults (the organization has not saved its own)."""
    updated_by: str | None
    updated_at: datetime | None


def default_document() -> dict[str, Any]:
    """The shipped default rules, as a document."""
    text = resources.files("careloop_tasks").joinpath("default_rules.json").read_text()
    document: dict[str, Any] = json.loads(text)
    return document


def load_defaults(runtime: Runtime) -> RuleSet:
    """Validate the shipped defaults and keep them on the runtime (a broken file stops
    the service at start-up, not at its first event)."""
    rules = parse_rules(default_document(), known_events=KNOWN_EVENTS)
    runtime.state[DEFAULTS_KEY] = rules
    return rules


async def rules_in_force(runtime: Runtime, rules: RuleSetRepository, org_id: str) -> RuleSet:
    stored = await rules.get(org_id)
    if stored is None:
        defaults: RuleSet = runtime.state[DEFAULTS_KEY]
        return defaults
    return parse_rules(stored.document, known_events=KNOWN_EVENTS)


async def read_rules(ctx: Context) -> RulesView:
    """The organization's rules (the defaults when it has none of its own)."""
    stored = await ctx.repos.rules.get(ctx.principal.org_id)
    if stored is None:
        return RulesView(default_document(), 0, None, None)
    return RulesView(stored.document, stored.version, stored.updated_by, stored.updated_at)


async def replace_rules(ctx: Context, document: dict[str, Any]) -> RulesView:
    """Replace the organization's rules with `document`, once it validates. Tasks made
    before keep their dedup keys; a rule kept under its id still finds them."""
    try:
        parse_rules(document, known_events=KNOWN_EVENTS)
    except InvalidRules as exc:
        raise InvalidRuleSet(str(exc)) from exc
    now = ctx.runtime.clock.now()
    version = await ctx.repos.rules.put(
        ctx.principal.org_id, document, updated_by=ctx.principal.actor_id, at=now
    )
    return RulesView(document, version, ctx.principal.actor_id, now)
