"""Outreach campaigns: define, list, read (with counts), launch and stop. Defining,
launching and stopping require `caregaps:manage`, reading `caregaps:read`; the use case
(`usecases/campaigns.py`) checks the location scope and audits the launch."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, status

from careloop_caregaps.api.common import ManageContext, ReadContext
from careloop_caregaps.api.schemas import (
    CampaignCountsRead,
    CampaignCreate,
    CampaignList,
    CampaignRead,
    CampaignStepIn,
)
from careloop_caregaps.domain.campaign import Step
from careloop_caregaps.usecases import campaigns as steps
from careloop_caregaps.usecases.campaigns import CampaignView
from careloop_kit.api_types import IdStr

router = APIRouter(prefix="/campaigns", tags=["campaigns"])


def _read(view: CampaignView) -> CampaignRead:
    c = view.campaign
    return CampaignRead(
        id=c.id,
        name=c.name,
        location_id=c.location_id,
        measure_ids=list(c.measure_ids),
        steps=[CampaignStepIn(channel=s.channel, wait_days=s.wait_days) for s in c.steps],
        status=c.status,
        created_by=c.created_by,
        created_at=c.created_at,
        launched_at=c.launched_at,
        launched_by=c.launched_by,
        stopped_at=c.stopped_at,
        counts=CampaignCountsRead(**asdict(view.counts)),
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CampaignRead)
async def create_campaign(body: CampaignCreate, ctx: ManageContext) -> CampaignRead:
    """A draft campaign: nothing is sent until it is launched."""
    view = await steps.create_campaign(
        ctx,
        body.name,
        body.measure_ids,
        body.location_id,
        [Step(s.channel, s.wait_days) for s in body.steps],
    )
    return _read(view)


@router.get("", response_model=CampaignList)
async def list_campaigns(ctx: ReadContext) -> CampaignList:
    """Campaigns at locations in your scope, newest first."""
    return CampaignList(items=[_read(v) for v in await steps.list_campaigns(ctx)])


@router.get("/{campaign_id}", response_model=CampaignRead)
async def read_campaign(campaign_id: IdStr, ctx: ReadContext) -> CampaignRead:
    """One campaign with its counts (patients targeted, steps sent, scheduled, ...)."""
    return _read(await steps.read_campaign(ctx, campaign_id))


@router.post("/{campaign_id}/launch", response_model=CampaignRead)
async def launch_campaign(campaign_id: IdStr, ctx: ManageContext) -> CampaignRead:
    """Step 1 to every patient with an open gap of its measures at its location."""
    return _read(await steps.launch_campaign(ctx, campaign_id))


@router.post("/{campaign_id}/stop", response_model=CampaignRead)
async def stop_campaign(campaign_id: IdStr, ctx: ManageContext) -> CampaignRead:
    """No further step for anyone; steps already sent stay sent."""
    return _read(await steps.stop_campaign(ctx, campaign_id))
