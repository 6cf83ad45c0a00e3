"""A booking or evidence answers a campaign: whichever door scheduled or closed a gap,
the patient's running outreach for that measure ends and its step timer is cancelled, in
the transaction of the gap change (`changes.keep_change` calls `end_outreach`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_caregaps.domain.campaign import ANSWERED, OutreachStatus, outreach_key
from careloop_caregaps.domain.gap import Gap
from careloop_caregaps.store.campaigns import CampaignRepository
from careloop_kit.db.timers import Timers
from careloop_kit.service import Runtime

STEP_TIMER = "campaign-step"
TIMERS_KEY = "caregaps_timers"


def timers_of(runtime: Runtime) -> Timers:
    timers: Timers = runtime.state[TIMERS_KEY]
    return timers


def timer_key(campaign_id: str, patient_id: str, step: int) -> str:
    """The dedup key of a step's answer timer: scheduling it twice keeps one."""
    return f"campaign:{outreach_key(campaign_id, patient_id, step)}"


async def end_outreach(runtime: Runtime, session: AsyncSession, gap: Gap) -> None:
    if gap.status not in ANSWERED:
        return
    campaigns = CampaignRepository(session)
    now = runtime.clock.now()
    keys = []
    for outreach, measures in await campaigns.waiting_of_patient(gap.org_id, gap.patient_id):
        if gap.measure_id not in measures:
            continue
        status: OutreachStatus = "scheduled" if gap.status == "scheduled" else "closed"
        await campaigns.set_outreach(outreach.campaign_id, gap.patient_id, status=status, now=now)
        keys.append(timer_key(outreach.campaign_id, gap.patient_id, outreach.step))
    await timers_of(runtime).cancel_all(session, keys)
