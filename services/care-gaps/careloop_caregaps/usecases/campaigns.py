"""Outreach campaigns: staff define one (measures, a location, a channel sequence) and
launch it; every patient with an open gap of those measures attributed to the location
is asked for by one `OutreachRequested` per step, the later steps on the kit's durable
timers, until a booking or evidence answers or the last step goes unanswered
(`OutreachUnanswered`, the coordinators' task).

Messaging sends (or does not: the contact budget, opt-outs and consent are its rules);
care-gaps only asks, once per `outreach_key`. The outreach row per campaign x patient,
its step and the timer's dedup key are what make a second launch or a redelivered timer
send nothing twice.

A campaign holds no PHI; launching it touches patients' gaps, so the launch is audited
with every patient it reached, and each gap it moves on the gap's trail with the actor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_caregaps.domain import campaign as plan
from careloop_caregaps.domain.campaign import Campaign, OutreachStatus, Step
from careloop_caregaps.domain.gap import Gap, outreach_sent
from careloop_caregaps.store.campaigns import CampaignCounts, Outreach
from careloop_caregaps.store.locations import LocationInfo
from careloop_caregaps.store.repository import Repositories, repositories
from careloop_caregaps.usecases.answers import STEP_TIMER, timer_key, timers_of
from careloop_caregaps.usecases.changes import keep_change, opened_gap
from careloop_caregaps.usecases.common import RESOURCE, InvalidGapRequest, library_of
from careloop_caregaps.usecases.evaluation import audit_change, keep_service_change
from careloop_contracts.caregaps import OutreachRequested, OutreachUnanswered
from careloop_kit.audit import AuditEntry, recorder_of
from careloop_kit.auth import AuthenticatedPrincipal
from careloop_kit.auth.permissions import CLINICAL
from careloop_kit.context import RequestContext
from careloop_kit.db.timers import DueTimer
from careloop_kit.problems import Conflict, Forbidden, NotFound
from careloop_kit.repository import new_id
from careloop_kit.service import Runtime

log = logging.getLogger(__name__)

Context = RequestContext[Repositories]


class InvalidCampaign(InvalidGapRequest):
    title, slug = "Invalid campaign", "invalid-campaign"


class CampaignNotLaunchable(Conflict):
    title, slug = "Campaign not launchable", "campaign-not-launchable"


@dataclass(frozen=True)
class CampaignView:
    campaign: Campaign
    counts: CampaignCounts


def _staff_only(ctx: Context) -> None:
    if ctx.principal.is_patient:
        raise Forbidden("Campaigns are run by staff.")


async def _check_location(ctx: Context, location_id: str) -> None:
    """The caller's scope names the location; a sensitive one only by name."""
    principal = ctx.principal
    if not principal.allows_location(location_id):
        raise InvalidCampaign(f"Location {location_id} is outside your access scope.")
    sensitive = await ctx.repos.locations.sensitive_ids(principal.org_id)
    if location_id in sensitive and location_id not in principal.locations:
        raise InvalidCampaign(
            f"Location {location_id} is sensitive: only staff scoped to it run its campaigns."
        )


async def _view(ctx: Context, found: Campaign) -> CampaignView:
    counts = await ctx.repos.campaigns.counts([found.id])
    return CampaignView(found, counts.get(found.id, CampaignCounts()))


async def _load(ctx: Context, campaign_id: str, *, for_update: bool = False) -> Campaign:
    _staff_only(ctx)
    found = await ctx.repos.campaigns.get(ctx.principal.org_id, campaign_id, for_update=for_update)
    if found is None or not ctx.principal.allows_location(found.location_id):
        raise NotFound(f"No campaign {campaign_id} in this organization.")
    await _check_location(ctx, found.location_id)
    return found


async def create_campaign(
    ctx: Context, name: str, measure_ids: Sequence[str], location_id: str, steps: Sequence[Step]
) -> CampaignView:
    _staff_only(ctx)
    known = {m.id for m in library_of(ctx.runtime).measures}
    found = plan.problems(name, measure_ids, steps, known)
    if found:
        raise InvalidCampaign(" ".join(found))
    await _check_location(ctx, location_id)
    new = Campaign(
        id=new_id(),
        org_id=ctx.principal.org_id,
        name=name.strip(),
        location_id=location_id,
        measure_ids=tuple(dict.fromkeys(measure_ids)),
        steps=tuple(steps),
        status="draft",
        created_by=ctx.principal.actor_id,
        created_at=ctx.runtime.clock.now(),
        launched_at=None,
        launched_by=None,
        stopped_at=None,
    )
    await ctx.repos.campaigns.add(new)
    return CampaignView(new, CampaignCounts())


async def list_campaigns(ctx: Context) -> list[CampaignView]:
    _staff_only(ctx)
    principal = ctx.principal
    _, locations = principal.listing_scope(None)
    sensitive = await ctx.repos.locations.sensitive_ids(principal.org_id)
    found = [
        c
        for c in await ctx.repos.campaigns.listing(principal.org_id, locations)
        if c.location_id not in sensitive or c.location_id in principal.locations
    ]
    counts = await ctx.repos.campaigns.counts([c.id for c in found])
    return [CampaignView(c, counts.get(c.id, CampaignCounts())) for c in found]


async def read_campaign(ctx: Context, campaign_id: str) -> CampaignView:
    return await _view(ctx, await _load(ctx, campaign_id))


def _requested(
    found: Campaign, patient_id: str, step: int, where: LocationInfo, now: datetime
) -> OutreachRequested:
    chosen = found.steps[step - 1]
    return OutreachRequested(
        outreach_key=plan.outreach_key(found.id, patient_id, step),
        campaign_id=found.id,
        patient_id=patient_id,
        org_id=found.org_id,
        location_id=found.location_id,
        step=step,
        channel=chosen.channel,
        practice_name=where.name or "",
        sensitive_location=where.sensitive,
        location_time_zone=where.time_zone or "UTC",
        respond_by=plan.respond_by(chosen, now),
        occurred_at=now,
    )


def _routing(found: Campaign, patient_id: str) -> dict[str, Any]:
    return {"org_id": found.org_id, "location_id": found.location_id, "subject": patient_id}


async def _campaign_gaps(
    runtime: Runtime, session: AsyncSession, found: Campaign, patient_id: str
) -> list[Gap]:
    """The patient's current gaps of the campaign's measures, locked."""
    current = await repositories(session).gaps.current_of(found.org_id, patient_id)
    return [
        await opened_gap(runtime, session, stored)
        for measure, stored in current.items()
        if measure in found.measure_ids
    ]


async def _request_step(
    runtime: Runtime,
    session: AsyncSession,
    found: Campaign,
    patient_id: str,
    step: int,
    where: LocationInfo,
    gaps: Sequence[Gap],
    *,
    actor: AuthenticatedPrincipal | None,
) -> datetime:
    """Step `step` asked of messaging, its answer timer set, the patient's open gaps of
    the campaign marked outreach-sent; returns the step's `respond_by`."""
    now = runtime.clock.now()
    event = _requested(found, patient_id, step, where, now)
    await runtime.outbox.add(session, event, **_routing(found, patient_id))
    await timers_of(runtime).schedule(
        session,
        STEP_TIMER,
        event.respond_by,
        {"org_id": found.org_id, "campaign_id": found.id, "patient_id": patient_id, "step": step},
        dedup_key=timer_key(found.id, patient_id, step),
    )
    for gap in gaps:
        change = outreach_sent(gap, now)
        if change is None:
            continue
        if actor is None:
            await keep_service_change(runtime, session, change)
        else:
            await keep_change(runtime, session, change, actor_id=actor.actor_id)
            await recorder_of(runtime).record(
                session,
                actor,
                AuditEntry(
                    action="update",
                    resource_type=RESOURCE,
                    phi_categories=[CLINICAL],
                    patient_id=gap.patient_id,
                    resource_id=gap.id,
                ),
            )
    return event.respond_by


async def launch_campaign(ctx: Context, campaign_id: str) -> CampaignView:
    """Step 1 for every patient with an open gap of the campaign at its location; a
    patient the campaign already reached is skipped, so launching again sends only to
    patients whose gap opened since."""
    entry = AuditEntry(
        action="update", resource_type=RESOURCE, phi_categories=[CLINICAL], resource_id=None
    )
    async with ctx.audited(entry):
        found = await _load(ctx, campaign_id, for_update=True)
        entry.resource_id = found.id
        if found.status == "stopped":
            raise CampaignNotLaunchable("A stopped campaign cannot be launched again.")
        where = await ctx.repos.locations.get(found.org_id, found.location_id)
        if where is None or where.name is None:
            raise CampaignNotLaunchable(
                f"Location {found.location_id} is not known to care-gaps yet (identity's "
                "location event has not arrived): try again shortly."
            )
        now = ctx.runtime.clock.now()
        if found.status == "draft":
            await ctx.repos.campaigns.mark(
                found.org_id,
                found.id,
                status="launched",
                launched_at=now,
                launched_by=ctx.principal.actor_id,
            )
        first = found.steps[0]
        reached = []
        for patient_id in await ctx.repos.campaigns.targets(
            found.org_id, found.location_id, found.measure_ids
        ):
            # Event steps and timers of one patient lock the patient first, then gaps.
            await ctx.repos.patients.lock(found.org_id, patient_id)
            added = await ctx.repos.campaigns.add_outreach(
                Outreach(
                    found.id, patient_id, found.org_id, 1, "waiting", plan.respond_by(first, now)
                ),
                now,
            )
            if not added:
                continue
            gaps = await _campaign_gaps(ctx.runtime, ctx.session, found, patient_id)
            await _request_step(
                ctx.runtime, ctx.session, found, patient_id, 1, where, gaps, actor=ctx.principal
            )
            reached.append(patient_id)
        entry.extra_patient_ids = reached
        log.info("campaign %s launched: %d patients reached", found.id, len(reached))
        refreshed = await ctx.repos.campaigns.get(found.org_id, found.id)
        assert refreshed is not None
        return await _view(ctx, refreshed)


async def stop_campaign(ctx: Context, campaign_id: str) -> CampaignView:
    """No further step: every running outreach stops and its timer is cancelled."""
    found = await _load(ctx, campaign_id, for_update=True)
    if found.status != "stopped":
        now = ctx.runtime.clock.now()
        await ctx.repos.campaigns.mark(found.org_id, found.id, status="stopped", stopped_at=now)
        stopped = await ctx.repos.campaigns.stop_waiting(found.id, now)
        await timers_of(ctx.runtime).cancel_all(
            ctx.session, [timer_key(o.campaign_id, o.patient_id, o.step) for o in stopped]
        )
    refreshed = await ctx.repos.campaigns.get(found.org_id, found.id)
    assert refreshed is not None
    return await _view(ctx, refreshed)


async def fire_step(runtime: Runtime, session: AsyncSession, timer: DueTimer) -> None:
    """A step's answer time ran out: the next step, the coordinators, or nothing (the
    patient answered, the campaign stopped, the timer is a redelivery)."""
    payload: dict[str, Any] = timer.payload
    repos = repositories(session)
    org_id, patient_id = payload["org_id"], payload["patient_id"]
    found = await repos.campaigns.get(org_id, payload["campaign_id"])
    if found is None or found.status != "launched":
        return
    await repos.patients.lock(org_id, patient_id)
    outreach = await repos.campaigns.outreach(found.id, patient_id)
    if outreach is None or outreach.status != "waiting" or outreach.step != payload["step"]:
        return
    gaps = await _campaign_gaps(runtime, session, found, patient_id)
    then = plan.after_wait(outreach.step, found.steps, [g.status for g in gaps])
    now = runtime.clock.now()
    if then.outcome == "next-step" and then.step is not None:
        where = await repos.locations.get(org_id, found.location_id)
        if where is None:  # the view lost the location: retried by the timer worker
            raise RuntimeError(f"location {found.location_id} not in the view")
        due = await _request_step(
            runtime, session, found, patient_id, then.step, where, gaps, actor=None
        )
        await repos.campaigns.set_outreach(
            found.id, patient_id, status="waiting", step=then.step, respond_by=due, now=now
        )
        return
    if then.outcome == "unanswered":
        await runtime.outbox.add(
            session,
            OutreachUnanswered(
                outreach_key=f"{found.id}:{patient_id}",
                campaign_id=found.id,
                patient_id=patient_id,
                org_id=org_id,
                location_id=found.location_id,
                open_gaps=then.open_gaps,
                occurred_at=now,
            ),
            **_routing(found, patient_id),
        )
        for gap in gaps:
            await audit_change(runtime, session, gap, "read")
        await repos.campaigns.set_outreach(found.id, patient_id, status="unanswered", now=now)
        return
    ended: OutreachStatus = "stopped"
    if then.outcome in ("scheduled", "closed"):
        ended = "scheduled" if then.outcome == "scheduled" else "closed"
    await repos.campaigns.set_outreach(found.id, patient_id, status=ended, now=now)
