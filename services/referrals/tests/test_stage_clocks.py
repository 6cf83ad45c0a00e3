"""Stage clocks on durable timers: a referral left in a stage past its clock is stalled
once and escalated once; one that moves on in time is neither, and its new stage's clock
starts from the move."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI

from careloop_contracts import prefixed
from careloop_kit.clock import FrozenClock
from careloop_kit.service import Runtime
from careloop_kit.testing.kafka import header, read_topic, wait_for_records
from careloop_kit.testing.services import Mint
from careloop_referrals.handlers.clocks import clock_worker
from careloop_referrals.settings import ReferralsSettings

from .test_referrals_api import VALID_NPIS, _directory_entry, _move, _referral

pytestmark = pytest.mark.service

STALLED = "careloop.referrals.referral.stalled.v1"
ESCALATED = "careloop.referrals.referral.escalated.v1"


async def test_a_stage_stalls_and_escalates_once_and_a_move_restarts_the_clock(
    referrals: httpx.AsyncClient,
    referrals_app: FastAPI,
    referrals_settings: ReferralsSettings,
    mint: Mint,
    clock: FrozenClock,
    topic_prefix: str,
) -> None:
    runtime: Runtime = referrals_app.state.runtime
    worker = clock_worker(runtime)
    referrer = await _directory_entry(referrals, mint(), VALID_NPIS[0])
    # Urgent: `received` stalls after 8 h and escalates 4 h later; `triaged` after 24 h.
    waits = await _referral(referrals, mint(), referrer)
    moves_on = await _referral(referrals, mint(), referrer)

    clock.advance(timedelta(hours=7))
    assert (await _move(referrals, mint(), moves_on["id"], "triaged")).status_code == 200
    assert await worker.fire_due() == 0

    clock.advance(timedelta(hours=2))  # 9 h: only the referral still in `received` stalls
    assert await worker.fire_due() == 1
    assert await worker.fire_due() == 0
    clock.advance(timedelta(hours=4))  # 13 h: its escalation
    assert await worker.fire_due() == 1
    clock.advance(timedelta(hours=24))  # 37 h: `triaged` (entered at 7 h) stalls at 31 h
    assert await worker.fire_due() == 1

    topic = prefixed("careloop.referrals", topic_prefix)
    await wait_for_records(
        referrals_settings.kafka_bootstrap,
        topic,
        lambda rs: sum(1 for r in rs if header(r, "ce_type") in (STALLED, ESCALATED)) >= 3,
    )
    records = await read_topic(referrals_settings.kafka_bootstrap, topic)
    seen = [
        (header(r, "ce_subject"), header(r, "ce_type"))
        for r in records
        if header(r, "ce_type") in (STALLED, ESCALATED)
    ]
    assert sorted(seen) == sorted(
        [(waits["id"], STALLED), (waits["id"], ESCALATED), (moves_on["id"], STALLED)]
    )
