"""Scheduling's own settings of a location: its zone, display name and sensitivity."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from careloop_scheduling.store.base import Repository
from careloop_scheduling.store.tables import location


@dataclass(frozen=True)
class LocationInfo:
    """What scheduling knows of a location: its zone, and how reminders sign."""

    id: str
    time_zone: str
    display_name: str | None
    sensitive: bool


class LocationRepository(Repository):
    """Scheduling's settings per location (zone, display name, sensitivity)."""

    async def put(self, org_id: str, item: LocationInfo, now: datetime) -> None:
        values = {
            "time_zone": item.time_zone,
            "display_name": item.display_name,
            "sensitive": item.sensitive,
            "updated_at": now,
        }
        statement = pg_insert(location).values(org_id=org_id, id=item.id, **values)
        await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=[location.c.org_id, location.c.id], set_=values
            )
        )

    async def get(self, org_id: str, location_id: str) -> LocationInfo | None:
        row = (
            await self._session.execute(
                select(location).where(location.c.org_id == org_id, location.c.id == location_id)
            )
        ).first()
        if row is None:
            return None
        return LocationInfo(row.id, row.time_zone, row.display_name, row.sensitive)

    async def time_zone(self, org_id: str, location_id: str) -> str | None:
        value: str | None = await self._session.scalar(
            select(location.c.time_zone).where(
                location.c.org_id == org_id, location.c.id == location_id
            )
        )
        return value
