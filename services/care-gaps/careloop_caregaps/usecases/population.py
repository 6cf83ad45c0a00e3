"""The population view for staff: current gaps counted by measure, location, provider
and status, a page of (patient, gap, measure, status, due date) — the minimum a
worklist needs — and the same rows as a CSV download. Both are audited as a query that
names every patient listed; the counts alone name none, but are part of the same read."""

from __future__ import annotations

from dataclasses import dataclass

from careloop_caregaps.store.gaps import PopulationCount, PopulationQuery, PopulationRow
from careloop_caregaps.store.repository import Repositories
from careloop_caregaps.usecases.common import settings_of
from careloop_caregaps.usecases.gaps import entry, hidden_locations
from careloop_kit.context import RequestContext
from careloop_kit.problems import Forbidden

Context = RequestContext[Repositories]

EXPORT_LIMIT = 100_000
"""Rows one CSV export lists at most (a larger panel is exported per measure or location)."""


@dataclass(frozen=True)
class PopulationFilter:
    measure_id: str | None = None
    location_id: str | None = None
    provider_id: str | None = None
    statuses: tuple[str, ...] = ()


@dataclass(frozen=True)
class PopulationPage:
    counts: list[PopulationCount]
    items: list[PopulationRow]
    next_cursor: str | None


async def _query(ctx: Context, wanted: PopulationFilter) -> PopulationQuery:
    principal = ctx.principal
    if principal.is_patient:
        raise Forbidden("The population view is for staff.")
    _, locations = principal.listing_scope(None)
    if wanted.location_id is not None:
        principal.can_access_location(wanted.location_id)
    return PopulationQuery(
        locations=locations,
        hidden=await hidden_locations(ctx),
        measure_id=wanted.measure_id,
        location_id=wanted.location_id,
        provider_id=wanted.provider_id,
        statuses=wanted.statuses,
    )


async def population(
    ctx: Context, wanted: PopulationFilter, *, cursor: str | None, limit: int
) -> PopulationPage:
    size = min(limit, settings_of(ctx.runtime).max_page_size)
    audit = entry("query")
    async with ctx.audited(audit):
        query = await _query(ctx, wanted)
        org = ctx.principal.org_id
        counts = await ctx.repos.gaps.counts(org, query)
        items = await ctx.repos.gaps.page(org, query, after=cursor, limit=size)
        audit.disclose_patients(row.patient_id for row in items)
    return PopulationPage(counts, items, items[-1].gap_id if len(items) == size else None)


async def export_rows(ctx: Context, wanted: PopulationFilter) -> list[PopulationRow]:
    """Every row of the view (up to `EXPORT_LIMIT`), read in one audited transaction."""
    audit = entry("export")
    async with ctx.audited(audit):
        query = await _query(ctx, wanted)
        org = ctx.principal.org_id
        rows: list[PopulationRow] = []
        after = None
        while len(rows) < EXPORT_LIMIT:
            page = await ctx.repos.gaps.page(org, query, after=after, limit=5000)
            rows.extend(page)
            if len(page) < 5000:
                break
            after = page[-1].gap_id
        audit.disclose_patients(row.patient_id for row in rows)
        return rows[:EXPORT_LIMIT]
