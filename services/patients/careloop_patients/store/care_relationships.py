"""Care relationships: why staff of a location other than the record's may reach it.

One row per source (an appointment today; a referral or a care gap later, as rows of
another kind), open while `ended_at` is null. Ending a relationship keeps its row, so
when it opened and when it ended stay on record. Repositories never commit: the
caller's transaction does (for the consumer, the one that marks the event as seen).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from uuid import uuid4

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.auth.principal import CareRelationship
from careloop_kit.rows import record_of, values_of
from careloop_patients.store.tables import care_relationship, patient


@dataclass(frozen=True)
class StoredRelationship:
    id: str
    org_id: str
    patient_id: str
    location_id: str
    kind: str
    source_id: str
    since: datetime
    ended_at: datetime | None
    end_reason: str | None

    @property
    def is_open(self) -> bool:
        return self.ended_at is None

    def as_access(self) -> CareRelationship:
        """What the access check needs of it."""
        return CareRelationship(
            relationship_id=self.id,
            patient_id=self.patient_id,
            location_id=self.location_id,
            kind=self.kind,
        )


@dataclass(frozen=True)
class PatientLink:
    """Where a patient id leads: its record's location and, once merged, the survivor."""

    id: str
    location_id: str | None
    merged_into_id: str | None


def _of_source(org_id: str, kind: str, source_id: str) -> tuple[ColumnElement[bool], ...]:
    """The conditions naming the relationship of one source (a source opens one)."""
    return (
        care_relationship.c.org_id == org_id,
        care_relationship.c.kind == kind,
        care_relationship.c.source_id == source_id,
    )


class CareRelationshipRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def open(
        self,
        *,
        org_id: str,
        patient_id: str,
        location_id: str,
        kind: str,
        source_id: str,
        now: datetime,
    ) -> StoredRelationship | None:
        """Open the relationship `source_id` stands for; None when that source already
        has one (open or ended: a source opens a relationship once)."""
        relationship = StoredRelationship(
            id=str(uuid4()),
            org_id=org_id,
            patient_id=patient_id,
            location_id=location_id,
            kind=kind,
            source_id=source_id,
            since=now,
            ended_at=None,
            end_reason=None,
        )
        inserted = await self._session.scalar(
            insert(care_relationship)
            .values(**values_of(relationship))
            .on_conflict_do_nothing(constraint="uq_care_relationship_source")
            .returning(care_relationship.c.id)
        )
        return None if inserted is None else relationship

    async def by_source(self, org_id: str, kind: str, source_id: str) -> StoredRelationship | None:
        row = (
            await self._session.execute(
                select(care_relationship).where(*_of_source(org_id, kind, source_id))
            )
        ).one_or_none()
        return None if row is None else record_of(StoredRelationship, row._mapping)

    async def end(
        self, org_id: str, kind: str, source_id: str, *, now: datetime, reason: str
    ) -> StoredRelationship | None:
        """End the open relationship of `source_id`; None when there is none open."""
        row = (
            await self._session.execute(
                update(care_relationship)
                .where(*_of_source(org_id, kind, source_id), care_relationship.c.ended_at.is_(None))
                .values(ended_at=now, end_reason=reason)
                .returning(*care_relationship.c)
            )
        ).one_or_none()
        return None if row is None else record_of(StoredRelationship, row._mapping)

    async def open_for(
        self, org_id: str, patient_id: str, locations: Collection[str]
    ) -> list[CareRelationship]:
        """The open relationships of a patient at any of `locations` (oldest first)."""
        if not locations:
            return []
        rows = await self._session.execute(
            select(care_relationship)
            .where(
                care_relationship.c.org_id == org_id,
                care_relationship.c.patient_id == patient_id,
                care_relationship.c.location_id.in_(list(locations)),
                care_relationship.c.ended_at.is_(None),
            )
            .order_by(care_relationship.c.since, care_relationship.c.id)
        )
        return [record_of(StoredRelationship, row._mapping).as_access() for row in rows]

    async def of_patient(self, org_id: str, patient_id: str) -> list[StoredRelationship]:
        """Every relationship of a patient, open or ended (oldest first)."""
        rows = await self._session.execute(
            select(care_relationship)
            .where(
                care_relationship.c.org_id == org_id,
                care_relationship.c.patient_id == patient_id,
            )
            .order_by(care_relationship.c.since, care_relationship.c.id)
        )
        return [record_of(StoredRelationship, row._mapping) for row in rows]

    async def move(self, org_id: str, *, from_patient: str, to_patient: str) -> list[str]:
        """Hand every relationship of a merged record to its survivor; their ids."""
        moved = await self._session.scalars(
            update(care_relationship)
            .where(
                care_relationship.c.org_id == org_id,
                care_relationship.c.patient_id == from_patient,
            )
            .values(patient_id=to_patient)
            .returning(care_relationship.c.id)
        )
        return list(moved)

    async def patient_link(self, org_id: str, patient_id: str) -> PatientLink | None:
        """The record's location and survivor; no PHI is read (nothing is decrypted)."""
        row = (
            await self._session.execute(
                select(patient.c.id, patient.c.location_id, patient.c.merged_into_id).where(
                    patient.c.org_id == org_id, patient.c.id == patient_id
                )
            )
        ).one_or_none()
        if row is None:
            return None
        return PatientLink(
            id=row.id, location_id=row.location_id, merged_into_id=row.merged_into_id
        )
