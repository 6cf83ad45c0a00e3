"""The population view: counts and a page of current gaps, or all of them as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from careloop_caregaps.api.common import ReadContext
from careloop_caregaps.api.schemas import PopulationCountRead, PopulationItem, PopulationRead
from careloop_caregaps.store.gaps import PopulationRow
from careloop_caregaps.usecases import population as steps
from careloop_caregaps.usecases.population import PopulationFilter
from careloop_contracts.caregaps import GapStatusName
from careloop_kit.api_types import IdStr, PageLimit

router = APIRouter(prefix="/population", tags=["population"])

CSV_COLUMNS = (
    "patient_id",
    "gap_id",
    "measure_id",
    "status",
    "due_on",
    "location_id",
    "provider_id",
)
MeasureId = Annotated[str, Query(max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]
Statuses = Annotated[list[GapStatusName] | None, Query(alias="status")]


def _filter(
    measure_id: str | None,
    location_id: str | None,
    provider_id: str | None,
    statuses: list[GapStatusName] | None,
) -> PopulationFilter:
    return PopulationFilter(measure_id, location_id, provider_id, tuple(statuses or ()))


@router.get("", response_model=PopulationRead)
async def population(
    ctx: ReadContext,
    measure_id: MeasureId | None = None,
    location_id: IdStr | None = None,
    provider_id: IdStr | None = None,
    statuses: Statuses = None,
    limit: PageLimit = 100,
    cursor: IdStr | None = None,
) -> PopulationRead:
    """Current gaps of your locations counted by measure, location, provider and status,
    and a page of them (repeat `status` to ask for several)."""
    wanted = _filter(measure_id, location_id, provider_id, statuses)
    page = await steps.population(ctx, wanted, cursor=cursor, limit=limit)
    return PopulationRead(
        counts=[PopulationCountRead(**c.__dict__) for c in page.counts],
        items=[
            PopulationItem(
                patient_id=r.patient_id,
                gap_id=r.gap_id,
                measure_id=r.measure_id,
                status=r.status,
                due_on=r.due_on,
            )
            for r in page.items
        ],
        next_cursor=page.next_cursor,
    )


def _csv(rows: list[PopulationRow]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for index, row in enumerate(rows, start=1):
        writer.writerow(
            [
                row.patient_id,
                row.gap_id,
                row.measure_id,
                row.status,
                "" if row.due_on is None else row.due_on.isoformat(),
                row.location_id or "",
                row.provider_id or "",
            ]
        )
        if index % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@router.get(
    "/export.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "The rows, a header first."}},
)
async def export_population(
    ctx: ReadContext,
    measure_id: MeasureId | None = None,
    location_id: IdStr | None = None,
    provider_id: IdStr | None = None,
    statuses: Statuses = None,
) -> StreamingResponse:
    """Every current gap of the view as CSV (the same filters)."""
    rows = await steps.export_rows(ctx, _filter(measure_id, location_id, provider_id, statuses))
    return StreamingResponse(
        _csv(rows),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="care-gaps.csv"'},
    )
