"""The measure library as staff read it, and the organization's measure settings: which
appointment types are a measure's visit (a booked one marks its open gaps scheduled).
Neither holds PHI, so neither is on a patient's trail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from careloop_caregaps.domain.library import Measure, MeasureLibrary
from careloop_caregaps.store.repository import Repositories
from careloop_caregaps.usecases.common import library_of
from careloop_kit.context import RequestContext
from careloop_kit.problems import NotFound

Context = RequestContext[Repositories]


@dataclass(frozen=True)
class ValueSetView:
    id: str
    title: str
    source: str
    version: str


@dataclass(frozen=True)
class MeasureView:
    id: str
    version: str
    title: str
    value_sets: tuple[ValueSetView, ...]
    visit_type_ids: tuple[str, ...]


def _value_sets(library: MeasureLibrary, measure: Measure) -> tuple[ValueSetView, ...]:
    return tuple(
        ValueSetView(vs.id, vs.title, vs.source, vs.version)
        for vs in (library.value_sets[i] for i in measure.value_set_ids)
    )


async def list_measures(ctx: Context) -> list[MeasureView]:
    visit_types = await ctx.repos.measures.visit_types(ctx.principal.org_id)
    library = library_of(ctx.runtime)
    return [
        MeasureView(
            m.id, m.version, m.title, _value_sets(library, m), tuple(visit_types.get(m.id, ()))
        )
        for m in library.measures
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
