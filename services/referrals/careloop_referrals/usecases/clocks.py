"""Stage clocks on the kit's durable timers: every stage a referral enters starts its
clock; a referral still in that stage when it runs out is stalled (`ReferralStalled`),
and escalated (`ReferralEscalated`) if it is still there later.

A timer belongs to one version of one referral (its dedup key names both), so each
stage stalls and escalates at most once, whatever redelivery, retry or restart happens:
the kit fires a timer once, in the transaction that publishes its event. Moving the
referral cancels the pending timers of the version it leaves; a timer that fires anyway
(it was claimed before the move committed) finds a newer version and does nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.referrals import ReferralEscalated, ReferralStalled
from careloop_kit.db.timers import DueTimer, Timers
from careloop_kit.service import Runtime
from careloop_referrals.domain.clocks import StageDeadlines, deadlines
from careloop_referrals.domain.referral import Referral
from careloop_referrals.store.clock_settings import ClockSettingRepository
from careloop_referrals.store.referrals import ReferralRepository
from careloop_referrals.usecases.events import event_fields, routing

log = logging.getLogger(__name__)

CLOCK_TIMER = "referral-stage-clock"
TIMERS_KEY = "referral_timers"

Phase = Literal["stall", "escalate"]


def timers_of(runtime: Runtime) -> Timers:
    timers: Timers = runtime.state[TIMERS_KEY]
    return timers


def _key(referral: Referral, phase: Phase) -> str:
    return f"{referral.id}:v{referral.version}:{phase}"


async def restart_clock(
    runtime: Runtime, session: AsyncSession, referral: Referral, *, left: Referral | None
) -> StageDeadlines | None:
    """Start the clock of the stage `referral` is in (none once it is finished), as its
    location, else its organization, else the defaults set it, after cancelling the
    timers of the version it `left`; in the caller's transaction. Returns the stage's
    deadlines (None: nothing waits)."""
    timers = timers_of(runtime)
    if left is not None:
        await timers.cancel_all(session, [_key(left, "stall"), _key(left, "escalate")])
    layers = await ClockSettingRepository(session).layers(referral.org_id, referral.location_id)
    due = deadlines(referral, *layers)
    if due is None:
        return None
    payload = {
        "org_id": referral.org_id,
        "referral_id": referral.id,
        "version": referral.version,
        "phase": "stall",
        "escalate_at": due.escalate_at.isoformat(),
    }
    await timers.schedule(
        session, CLOCK_TIMER, due.stalled_at, payload, dedup_key=_key(referral, "stall")
    )
    return due


async def fire_clock(runtime: Runtime, session: AsyncSession, timer: DueTimer) -> None:
    """A stage clock ran out: stall (and schedule the escalation) or escalate, unless
    the referral has moved on since the timer was set."""
    payload: dict[str, Any] = timer.payload
    current = await ReferralRepository(session).get(
        payload["org_id"], payload["referral_id"], for_update=True
    )
    if current is None or current.version != payload["version"] or not current.is_open:
        return
    now = runtime.clock.now()
    common = {**event_fields(current, now), "stage_entered_at": current.stage_entered_at}
    if payload["phase"] == "stall":
        escalate_at = datetime.fromisoformat(payload["escalate_at"])
        await runtime.outbox.add(
            session, ReferralStalled(**common, escalate_at=escalate_at), **routing(current)
        )
        await timers_of(runtime).schedule(
            session,
            CLOCK_TIMER,
            escalate_at,
            {**payload, "phase": "escalate"},
            dedup_key=_key(current, "escalate"),
        )
        log.info("referral %s stalled in %s", current.id, current.stage)
    else:
        await runtime.outbox.add(session, ReferralEscalated(**common), **routing(current))
        log.info("referral %s escalated in %s", current.id, current.stage)
