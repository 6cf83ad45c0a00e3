"""The measure library and the organization's measure settings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from careloop_caregaps.api.common import ManageContext, ReadContext
from careloop_caregaps.api.schemas import MeasureList, MeasureRead, ValueSetRead, VisitTypesUpdate
from careloop_caregaps.usecases import measures as steps
from careloop_caregaps.usecases.measures import MeasureView

router = APIRouter(prefix="/measures", tags=["measures"])

MeasureId = Annotated[str, Path(max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]


def _read(view: MeasureView) -> MeasureRead:
    return MeasureRead(
        id=view.id,
        version=view.version,
        title=view.title,
        value_sets=[ValueSetRead(**v.__dict__) for v in view.value_sets],
        visit_type_ids=list(view.visit_type_ids),
    )


@router.get("", response_model=MeasureList)
async def list_measures(ctx: ReadContext) -> MeasureList:
    """The library: each measure's id, version and title, its value sets (with their
    source and version) and the organization's visit types for it."""
    return MeasureList(items=[_read(v) for v in await steps.list_measures(ctx)])


@router.put("/{measure_id}/visit-types", response_model=MeasureRead)
async def set_visit_types(
    measure_id: MeasureId, body: VisitTypesUpdate, ctx: ManageContext
) -> MeasureRead:
    """The appointment types whose booking marks the measure's open gaps scheduled."""
    return _read(await steps.set_visit_types(ctx, measure_id, body.appointment_type_ids))
