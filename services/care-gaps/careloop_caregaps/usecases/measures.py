"""The measure library as staff read it, and the organization's measure settings: which
appointment types are a measure's visit (a booked one marks its open gaps scheduled).
Neither holds PHI, so neither is on a patient's trail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from careloop_caregaps.store.repository import Repositories
from careloop_caregaps.usecases.common import library_of
from careloop_kit.context import RequestContext
from careloop_kit.problems import NotFound

Context = RequestContext[Repositories]


@dataclass(frozen=True)
class ValueSetView:
    id: str
    source: str
    version: str


@dataclass(frozen=True)
class MeasureView:
    id: str
    version: str
    title: str
    value_sets: tuple[ValueSetView, ...]
    visit_type_ids: tuple[str, ...]


def _value_sets(measure: object) -> tuple[ValueSetView, ...]:
    found = getattr(measure, "value_sets", ()) or ()
    return tuple(
        ValueSetView(str(v.id), str(getattr(v, "source", "")), str(getattr(v, "version", "")))
        for v in found
    )


async def list_measures(ctx: Context) -> list[MeasureView]:
    visit_types = await ctx.repos.measures.visit_types(ctx.principal.org_id)
    return [
        MeasureView(m.id, m.version, m.title, _value_sets(m), tuple(visit_types.get(m.id, ())))
        for m in library_of(ctx.runtime).measures
    ]


async def set_visit_types(
    ctx: Context, measure_id: str, appointment_type_ids: Sequence[str]
) -> MeasureView:
    library = library_of(ctx.runtime)
    if measure_id not in {m.id for m in library.measures}:
        raise NotFound(f"No measure {measure_id} in the library.")
    await ctx.repos.measures.set_visit_types(
        ctx.principal.org_id,
        measure_id,
        appointment_type_ids,
        by=ctx.principal.actor_id,
        now=ctx.runtime.clock.now(),
    )
    return next(v for v in await list_measures(ctx) if v.id == measure_id)
