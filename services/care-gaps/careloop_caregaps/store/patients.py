"""What care-gaps holds per patient: the profile (sealed demographics), the facts
patients published, and the attribution to a location and provider. Ciphertexts arrive
sealed: the use cases seal and open through the kit's field port."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert

from careloop_caregaps.domain.gap import Attribution
from careloop_caregaps.store.tables import attribution, clinical_fact, patient_profile
from careloop_kit.repository import Repository


@dataclass(frozen=True)
class StoredFact:
    fact_id: str
    version: int
    fact_ct: bytes


class PatientRepository(Repository):
    async def ensure(self, org_id: str, patient_id: str, now: datetime) -> None:
        """Know the patient (a fact or a visit may come before the registration)."""
        await self._session.execute(
            insert(patient_profile)
            .values(org_id=org_id, patient_id=patient_id, version=0, updated_at=now)
            .on_conflict_do_nothing(index_elements=["org_id", "patient_id"])
        )

    async def lock(self, org_id: str, patient_id: str) -> None:
        """Hold the patient's row until the transaction ends: evaluations and event steps
        of one patient take turns (two could otherwise both open a measure's first gap)."""
        await self._session.execute(
            select(patient_profile.c.version)
            .where(patient_profile.c.org_id == org_id, patient_profile.c.patient_id == patient_id)
            .with_for_update()
        )

    async def set_demographics(
        self, org_id: str, patient_id: str, demographics_ct: bytes, now: datetime
    ) -> None:
        statement = insert(patient_profile).values(
            org_id=org_id,
            patient_id=patient_id,
            demographics_ct=demographics_ct,
            version=1,
            updated_at=now,
        )
        await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=["org_id", "patient_id"],
                set_={
                    "demographics_ct": demographics_ct,
                    "version": patient_profile.c.version + 1,
                    "updated_at": now,
                },
            )
        )

    async def demographics_of(self, org_id: str, patient_id: str) -> bytes | None:
        value: bytes | None = await self._session.scalar(
            select(patient_profile.c.demographics_ct).where(
                patient_profile.c.org_id == org_id, patient_profile.c.patient_id == patient_id
            )
        )
        return value

    async def known(self, org_id: str, patient_id: str) -> bool:
        found = await self._session.scalar(
            select(patient_profile.c.version).where(
                patient_profile.c.org_id == org_id, patient_profile.c.patient_id == patient_id
            )
        )
        return found is not None

    def _population(self, org_id: str, location_id: str | None) -> Select[Any]:
        query = select(patient_profile.c.patient_id).where(patient_profile.c.org_id == org_id)
        if location_id is not None:
            query = query.join(
                attribution,
                (attribution.c.org_id == patient_profile.c.org_id)
                & (attribution.c.patient_id == patient_profile.c.patient_id),
            ).where(attribution.c.location_id == location_id)
        return query

    async def count(self, org_id: str, location_id: str | None) -> int:
        subquery = self._population(org_id, location_id).subquery()
        return int(await self._session.scalar(select(func.count()).select_from(subquery)) or 0)

    async def page_ids(
        self, org_id: str, location_id: str | None, *, after: str | None, limit: int
    ) -> list[str]:
        """Patient ids in id order after `after` (an evaluation job's batches)."""
        query = self._population(org_id, location_id)
        if after is not None:
            query = query.where(patient_profile.c.patient_id > after)
        rows = await self._session.scalars(
            query.order_by(patient_profile.c.patient_id).limit(limit)
        )
        return list(rows)

    async def forget(self, org_id: str, patient_id: str) -> None:
        """The record was merged away: its profile goes (the survivor's stays)."""
        await self._session.execute(
            delete(patient_profile).where(
                patient_profile.c.org_id == org_id, patient_profile.c.patient_id == patient_id
            )
        )
        await self._session.execute(
            delete(attribution).where(
                attribution.c.org_id == org_id, attribution.c.patient_id == patient_id
            )
        )

    # Facts

    async def record_fact(
        self,
        org_id: str,
        patient_id: str,
        fact_id: str,
        *,
        version: int,
        fact_ct: bytes,
        now: datetime,
    ) -> bool:
        """Keep the fact at this version; False (nothing written) when the same or a
        later version is held already: a fact that arrives twice counts once."""
        statement = insert(clinical_fact).values(
            fact_id=fact_id,
            org_id=org_id,
            patient_id=patient_id,
            version=version,
            fact_ct=fact_ct,
            updated_at=now,
        )
        result = await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=["fact_id"],
                set_={"version": version, "fact_ct": fact_ct, "updated_at": now},
                # A fact id of another tenant is never overwritten.
                where=(clinical_fact.c.version < version) & (clinical_fact.c.org_id == org_id),
            ).returning(clinical_fact.c.fact_id)
        )
        return result.first() is not None

    async def fact_version(self, fact_id: str) -> int | None:
        value: int | None = await self._session.scalar(
            select(clinical_fact.c.version).where(clinical_fact.c.fact_id == fact_id)
        )
        return value

    async def facts_of(self, org_id: str, patient_id: str) -> list[StoredFact]:
        rows = await self._session.execute(
            select(clinical_fact.c.fact_id, clinical_fact.c.version, clinical_fact.c.fact_ct)
            .where(clinical_fact.c.org_id == org_id, clinical_fact.c.patient_id == patient_id)
            .order_by(clinical_fact.c.fact_id)
        )
        return [StoredFact(row.fact_id, row.version, row.fact_ct) for row in rows]

    async def move_facts(self, org_id: str, merged_id: str, surviving_id: str) -> int:
        result = await self._session.execute(
            update(clinical_fact)
            .where(clinical_fact.c.org_id == org_id, clinical_fact.c.patient_id == merged_id)
            .values(patient_id=surviving_id)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    # Attribution

    async def attribute(
        self,
        org_id: str,
        patient_id: str,
        *,
        location_id: str,
        provider_id: str,
        appointment_id: str,
        occurred_at: datetime,
    ) -> bool:
        """The latest visit is the care relationship; an older event changes nothing."""
        row = {
            "location_id": location_id,
            "provider_id": provider_id,
            "appointment_id": appointment_id,
            "occurred_at": occurred_at,
        }
        statement = insert(attribution).values(org_id=org_id, patient_id=patient_id, **row)
        result = await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=["org_id", "patient_id"],
                set_=row,
                where=attribution.c.occurred_at <= statement.excluded.occurred_at,
            ).returning(attribution.c.patient_id)
        )
        return result.first() is not None

    async def attribution_of(self, org_id: str, patient_id: str) -> Attribution:
        row = (
            await self._session.execute(
                select(attribution.c.location_id, attribution.c.provider_id).where(
                    attribution.c.org_id == org_id, attribution.c.patient_id == patient_id
                )
            )
        ).first()
        return Attribution(None, None) if row is None else Attribution(row[0], row[1])

    async def attributions_of(
        self, org_id: str, patient_ids: Sequence[str]
    ) -> dict[str, Attribution]:
        rows = await self._session.execute(
            select(
                attribution.c.patient_id, attribution.c.location_id, attribution.c.provider_id
            ).where(attribution.c.org_id == org_id, attribution.c.patient_id.in_(list(patient_ids)))
        )
        return {row[0]: Attribution(row[1], row[2]) for row in rows}
