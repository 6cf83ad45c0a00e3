"""The organization's measure settings: which appointment types are a measure's visit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, insert, select

from careloop_caregaps.store.tables import measure_visit_type
from careloop_kit.repository import Repository


class MeasureSettingsRepository(Repository):
    async def set_visit_types(
        self,
        org_id: str,
        measure_id: str,
        appointment_type_ids: Sequence[str],
        *,
        by: str,
        now: datetime,
    ) -> None:
        await self._session.execute(
            delete(measure_visit_type).where(
                measure_visit_type.c.org_id == org_id,
                measure_visit_type.c.measure_id == measure_id,
            )
        )
        if appointment_type_ids:
            await self._session.execute(
                insert(measure_visit_type),
                [
                    {
                        "org_id": org_id,
                        "measure_id": measure_id,
                        "appointment_type_id": type_id,
                        "updated_by": by,
                        "updated_at": now,
                    }
                    for type_id in dict.fromkeys(appointment_type_ids)
                ],
            )

    async def visit_types(self, org_id: str) -> dict[str, list[str]]:
        rows = await self._session.execute(
            select(measure_visit_type.c.measure_id, measure_visit_type.c.appointment_type_id)
            .where(measure_visit_type.c.org_id == org_id)
            .order_by(measure_visit_type.c.measure_id, measure_visit_type.c.appointment_type_id)
        )
        found: dict[str, list[str]] = {}
        for measure_id, type_id in rows:
            found.setdefault(measure_id, []).append(type_id)
        return found

    async def measures_for(self, org_id: str, appointment_type_id: str) -> set[str]:
        rows = await self._session.scalars(
            select(measure_visit_type.c.measure_id).where(
                measure_visit_type.c.org_id == org_id,
                measure_visit_type.c.appointment_type_id == appointment_type_id,
            )
        )
        return set(rows)
