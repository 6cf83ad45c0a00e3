"""Stage clocks: what applies at a location (or the organization) and where it comes
from, and a level's own settings. No PHI: not audited, like the directory."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from careloop_kit.api_types import IdStr
from careloop_referrals.api.common import ManageContext, ReadContext
from careloop_referrals.api.schemas import ClockRead, ClockSettings, ClocksRead
from careloop_referrals.domain.clocks import StageClock
from careloop_referrals.usecases import clock_settings as steps
from careloop_referrals.usecases.clock_settings import EffectiveClock
from careloop_referrals.usecases.common import InvalidReferral

router = APIRouter(prefix="/referrals/clocks", tags=["referral clocks"])


def _read(location_id: str | None, found: list[EffectiveClock]) -> ClocksRead:
    return ClocksRead(
        location_id=location_id,
        clocks=[
            ClockRead(
                urgency=c.urgency,
                stage=c.stage,
                stall_after_hours=c.clock.stall_after / timedelta(hours=1),
                escalate_after_hours=c.clock.escalate_after / timedelta(hours=1),
                source=c.source,
            )
            for c in found
        ],
    )


@router.get("", response_model=ClocksRead)
async def read_clocks(ctx: ReadContext, location_id: IdStr | None = None) -> ClocksRead:
    """The clock of every waiting stage per urgency at `location_id` (omitted: the
    organization's), with the level each comes from (`default`, `organization`,
    `location`)."""
    return _read(location_id, await steps.effective_clocks(ctx, location_id))


@router.put("", response_model=ClocksRead)
async def set_clocks(body: ClockSettings, ctx: ManageContext) -> ClocksRead:
    """Replace a level's own clocks (`location_id` omitted: the organization's); what it
    leaves out inherits. Clocks already running keep their deadlines."""
    layer = {
        (c.urgency, c.stage): StageClock(
            timedelta(hours=c.stall_after_hours), timedelta(hours=c.escalate_after_hours)
        )
        for c in body.clocks
    }
    if len(layer) != len(body.clocks):
        raise InvalidReferral("Each (urgency, stage) appears once.")
    return _read(body.location_id, await steps.set_clocks(ctx, body.location_id, layer))
