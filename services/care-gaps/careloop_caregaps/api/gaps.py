"""Gaps: a patient's gaps, one gap with its evidence and history, and the decisions
staff take by hand. Each route requires its permission first (`require`, MFA included);
the use case (`usecases/gaps.py`) authorizes the object and audits the call."""

from __future__ import annotations

from fastapi import APIRouter

from careloop_caregaps.api.common import ReadContext, UpdateContext
from careloop_caregaps.api.schemas import (
    DecisionCreate,
    Evidence,
    GapList,
    GapRead,
    TransitionRead,
)
from careloop_caregaps.domain.gap import Gap
from careloop_caregaps.usecases import gaps as steps
from careloop_caregaps.usecases.gaps import GapView, Transition
from careloop_kit.api_types import IdStr

router = APIRouter(tags=["gaps"])


def _transition(t: Transition) -> TransitionRead:
    return TransitionRead(
        status=t.to_status,
        from_status=t.from_status,
        to_status=t.to_status,
        cause=t.cause,
        actor_id=t.actor_id,
        reason=t.reason,
        at=t.at,
    )


def gap_read(gap: Gap, history: tuple[Transition, ...] = ()) -> GapRead:
    return GapRead(
        id=gap.id,
        org_id=gap.org_id,
        patient_id=gap.patient_id,
        measure_id=gap.measure_id,
        measure_version=gap.measure_version,
        status=gap.status,
        due_on=gap.due_on,
        reason=gap.reason,
        location_id=gap.location_id,
        provider_id=gap.provider_id,
        version=gap.version,
        created_at=gap.created_at,
        updated_at=gap.updated_at,
        evidence=Evidence(opened_by=list(gap.opened_by), closed_by=list(gap.closed_by)),
        evidence_fact_ids=list(dict.fromkeys((*gap.opened_by, *gap.closed_by))),
        history=[_transition(t) for t in history],
    )


def _read(view: GapView) -> GapRead:
    return gap_read(view.gap, view.history)


@router.get("/patients/{patient_id}/gaps", response_model=GapList)
async def patient_gaps(patient_id: IdStr, ctx: ReadContext) -> GapList:
    """The patient's gaps (every care cycle) at locations in your scope."""
    return GapList(items=[gap_read(g) for g in await steps.patient_gaps(ctx, patient_id)])


@router.get("/gaps/{gap_id}", response_model=GapRead)
async def read_gap(gap_id: IdStr, ctx: ReadContext) -> GapRead:
    """One gap, the fact ids that opened and closed it, and its history."""
    return _read(await steps.read_gap(ctx, gap_id))


@router.post("/gaps/{gap_id}/decline", response_model=GapRead)
async def decline_gap(gap_id: IdStr, body: DecisionCreate, ctx: UpdateContext) -> GapRead:
    """The patient declined the care the gap asks for."""
    return _read(await steps.decline_gap(ctx, gap_id, body.reason))


@router.post("/gaps/{gap_id}/exclude", response_model=GapRead)
async def exclude_gap(gap_id: IdStr, body: DecisionCreate, ctx: UpdateContext) -> GapRead:
    """Exclude the patient from the measure for a reason the data does not show."""
    return _read(await steps.exclude_gap(ctx, gap_id, body.reason))


@router.post("/gaps/{gap_id}/reopen", response_model=GapRead)
async def reopen_gap(gap_id: IdStr, ctx: UpdateContext) -> GapRead:
    """Undo a decline or an exclusion."""
    return _read(await steps.reopen_gap(ctx, gap_id))
