"""Gaps and their transitions: the measure's current gap per patient (one at most, an
index says so), saves against versions, the population view's counts and pages, and
the move of a merged record's gaps. Evidence arrives sealed."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, or_, select, update

from careloop_caregaps.domain.gap import Gap, GapStatus
from careloop_caregaps.store.tables import care_gap, gap_transition
from careloop_kit.repository import Repository, given


class StaleGap(Exception):
    """The gap changed since it was read: another change won."""


@dataclass(frozen=True)
class StoredGap:
    gap: Gap
    evidence_ct: bytes


@dataclass(frozen=True)
class StoredTransition:
    from_status: str | None
    to_status: str
    gap_version: int
    cause: str | None
    actor_id: str
    reason_ct: bytes | None
    at: datetime


@dataclass(frozen=True)
class PopulationQuery:
    """The population view's filters; `locations` None: every location, and `hidden`
    sensitive locations the caller may not see."""

    locations: Collection[str] | None
    hidden: Collection[str] = ()
    measure_id: str | None = None
    location_id: str | None = None
    provider_id: str | None = None
    statuses: Collection[str] = ()


@dataclass(frozen=True)
class PopulationRow:
    patient_id: str
    gap_id: str
    measure_id: str
    status: str
    due_on: date | None
    location_id: str | None
    provider_id: str | None


@dataclass(frozen=True)
class PopulationCount:
    measure_id: str
    location_id: str | None
    provider_id: str | None
    status: str
    count: int


_STORED_ONLY = ("is_current", "evidence_ct", "opened_by", "closed_by")


def _gap(row: Any, opened_by: tuple[str, ...] = (), closed_by: tuple[str, ...] = ()) -> Gap:
    return Gap(
        id=row.id,
        org_id=row.org_id,
        patient_id=row.patient_id,
        measure_id=row.measure_id,
        measure_version=row.measure_version,
        status=row.status,
        due_on=row.due_on,
        reason=row.reason,
        location_id=row.location_id,
        provider_id=row.provider_id,
        opened_by=opened_by,
        closed_by=closed_by,
        by_hand=row.by_hand,
        appointment_id=row.appointment_id,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _values(gap: Gap) -> dict[str, object]:
    return {
        "patient_id": gap.patient_id,
        "measure_id": gap.measure_id,
        "measure_version": gap.measure_version,
        "status": gap.status,
        "due_on": gap.due_on,
        "reason": gap.reason,
        "location_id": gap.location_id,
        "provider_id": gap.provider_id,
        "by_hand": gap.by_hand,
        "appointment_id": gap.appointment_id,
        "version": gap.version,
        "updated_at": gap.updated_at,
    }


def _scope(query: PopulationQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.locations is not None:
        conditions.append(care_gap.c.location_id.in_(list(query.locations)))
    if query.hidden:
        # A gap not attributed anywhere is at no sensitive location.
        conditions.append(
            or_(care_gap.c.location_id.is_(None), care_gap.c.location_id.not_in(list(query.hidden)))
        )
    return conditions


def _population(org_id: str, query: PopulationQuery) -> list[ColumnElement[bool]]:
    conditions = [care_gap.c.org_id == org_id, care_gap.c.is_current.is_(True), *_scope(query)]
    conditions += given(
        care_gap,
        measure_id=query.measure_id,
        location_id=query.location_id,
        provider_id=query.provider_id,
    )
    if query.statuses:
        conditions.append(care_gap.c.status.in_(list(query.statuses)))
    return conditions


class GapRepository(Repository):
    async def current_of(self, org_id: str, patient_id: str) -> dict[str, StoredGap]:
        """The patient's current gap of each measure, by measure id, locked: evaluations
        of one patient take turns."""
        rows = await self._session.execute(
            select(care_gap)
            .where(
                care_gap.c.org_id == org_id,
                care_gap.c.patient_id == patient_id,
                care_gap.c.is_current.is_(True),
            )
            .with_for_update()
        )
        return {row.measure_id: StoredGap(_gap(row), row.evidence_ct) for row in rows}

    async def get(self, org_id: str, gap_id: str, *, for_update: bool = False) -> StoredGap | None:
        row = await self._row(care_gap, org_id, gap_id, for_update=for_update)
        return None if row is None else StoredGap(_gap(row), row["evidence_ct"])

    async def of_patient(self, org_id: str, patient_id: str) -> list[StoredGap]:
        """Every gap of the patient (earlier care cycles too): per measure the current
        one first, then the earlier ones newest first."""
        rows = await self._session.execute(
            select(care_gap)
            .where(care_gap.c.org_id == org_id, care_gap.c.patient_id == patient_id)
            .order_by(
                care_gap.c.measure_id,
                care_gap.c.is_current.desc(),
                care_gap.c.created_at.desc(),
                care_gap.c.id,
            )
        )
        return [StoredGap(_gap(row), row.evidence_ct) for row in rows]

    async def add(self, gap: Gap, evidence_ct: bytes) -> None:
        """A new current gap: the measure's earlier current gap (a finished cycle) is
        retired first, so the one-current-gap index holds."""
        await self._session.execute(
            update(care_gap)
            .where(
                care_gap.c.org_id == gap.org_id,
                care_gap.c.patient_id == gap.patient_id,
                care_gap.c.measure_id == gap.measure_id,
                care_gap.c.is_current.is_(True),
            )
            .values(is_current=False)
        )
        await self._session.execute(
            insert(care_gap).values(
                id=gap.id,
                org_id=gap.org_id,
                created_at=gap.created_at,
                is_current=True,
                evidence_ct=evidence_ct,
                **_values(gap),
            )
        )

    async def save(self, gap: Gap, evidence_ct: bytes, *, previous_version: int) -> None:
        result = await self._session.execute(
            update(care_gap)
            .where(
                care_gap.c.id == gap.id,
                care_gap.c.org_id == gap.org_id,
                care_gap.c.version == previous_version,
            )
            .values(evidence_ct=evidence_ct, **_values(gap))
        )
        if getattr(result, "rowcount", 0) != 1:
            raise StaleGap(gap.id)

    async def add_transition(
        self,
        gap: Gap,
        *,
        from_status: GapStatus | None,
        cause: str | None,
        actor_id: str,
        at: datetime,
        reason_ct: bytes | None = None,
    ) -> None:
        await self._session.execute(
            insert(gap_transition).values(
                gap_id=gap.id,
                org_id=gap.org_id,
                from_status=from_status,
                to_status=gap.status,
                gap_version=gap.version,
                cause=cause,
                actor_id=actor_id,
                reason_ct=reason_ct,
                at=at,
            )
        )

    async def transitions(self, org_id: str, gap_id: str) -> list[StoredTransition]:
        rows = await self._session.execute(
            select(gap_transition)
            .where(gap_transition.c.org_id == org_id, gap_transition.c.gap_id == gap_id)
            .order_by(gap_transition.c.seq)
        )
        return [
            StoredTransition(
                r.from_status, r.to_status, r.gap_version, r.cause, r.actor_id, r.reason_ct, r.at
            )
            for r in rows
        ]

    async def counts(self, org_id: str, query: PopulationQuery) -> list[PopulationCount]:
        columns = (
            care_gap.c.measure_id,
            care_gap.c.location_id,
            care_gap.c.provider_id,
            care_gap.c.status,
        )
        rows = await self._session.execute(
            select(*columns, func.count())
            .where(*_population(org_id, query))
            .group_by(*columns)
            .order_by(*columns)
        )
        return [PopulationCount(*row) for row in rows]

    async def page(
        self, org_id: str, query: PopulationQuery, *, after: str | None, limit: int
    ) -> list[PopulationRow]:
        """Current gaps in gap-id order after `after` (keyset paging)."""
        conditions = _population(org_id, query)
        if after is not None:
            conditions.append(care_gap.c.id > after)
        rows = await self._session.execute(
            select(
                care_gap.c.patient_id,
                care_gap.c.id,
                care_gap.c.measure_id,
                care_gap.c.status,
                care_gap.c.due_on,
                care_gap.c.location_id,
                care_gap.c.provider_id,
            )
            .where(and_(*conditions))
            .order_by(care_gap.c.id)
            .limit(limit)
        )
        return [PopulationRow(*row) for row in rows]

    async def move(self, org_id: str, merged_id: str, surviving_id: str) -> None:
        """Re-point the merged record's gaps to the survivor. Where both had a current gap
        of one measure the survivor's stays current; the survivor's re-evaluation then
        settles what holds."""
        survivor_measures = select(care_gap.c.measure_id).where(
            care_gap.c.org_id == org_id,
            care_gap.c.patient_id == surviving_id,
            care_gap.c.is_current.is_(True),
        )
        await self._session.execute(
            update(care_gap)
            .where(
                care_gap.c.org_id == org_id,
                care_gap.c.patient_id == merged_id,
                care_gap.c.measure_id.in_(survivor_measures.scalar_subquery()),
            )
            .values(is_current=False)
        )
        await self._session.execute(
            update(care_gap)
            .where(care_gap.c.org_id == org_id, care_gap.c.patient_id == merged_id)
            .values(patient_id=surviving_id)
        )
