"""Leakage of outbound referrals (`domain.leakage`) on the kit's durable timers: each
stage that can leak sets a watch; a watch that finds the referral where it was
publishes `ReferralLeaked` once (its dedup key names the referral, the kind and the
version it was set at), and a redirect is leakage at once."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.referrals import ReferralLeaked
from careloop_kit.db.timers import DueTimer
from careloop_kit.service import Runtime
from careloop_referrals.domain.leakage import Leakage, leaked, leaked_now, watches
from careloop_referrals.domain.referral import Referral
from careloop_referrals.store.referrals import ReferralRepository
from careloop_referrals.usecases.clocks import timers_of
from careloop_referrals.usecases.events import event_fields, routing

log = logging.getLogger(__name__)

LEAKAGE_TIMER = "referral-leakage"


async def _publish(
    runtime: Runtime, session: AsyncSession, referral: Referral, leakage: Leakage
) -> None:
    event = ReferralLeaked(**event_fields(referral, runtime.clock.now()), leakage=leakage.value)
    await runtime.outbox.add(session, event, **routing(referral))
    log.info("referral %s leaked: %s", referral.id, leakage)


async def watch_leakage(runtime: Runtime, session: AsyncSession, referral: Referral) -> None:
    """After a referral entered its stage: the leakage the step shows, and the watches
    the new stage needs; in the caller's transaction."""
    now = leaked_now(referral)
    if now is not None:
        await _publish(runtime, session, referral, now)
    for watch in watches(referral):
        payload = {
            "org_id": referral.org_id,
            "referral_id": referral.id,
            "leakage": watch.leakage.value,
            "version": referral.version,
        }
        key = f"{referral.id}:leak:{watch.leakage.value}:v{referral.version}"
        await timers_of(runtime).schedule(session, LEAKAGE_TIMER, watch.due, payload, dedup_key=key)


async def fire_leakage(runtime: Runtime, session: AsyncSession, timer: DueTimer) -> None:
    """A leakage watch ran out: publish it if the referral is still where it was."""
    payload: dict[str, Any] = timer.payload
    current = await ReferralRepository(session).get(
        payload["org_id"], payload["referral_id"], for_update=True
    )
    leakage = Leakage(payload["leakage"])
    if current is not None and leaked(current, leakage, watched_version=payload["version"]):
        await _publish(runtime, session, current, leakage)
