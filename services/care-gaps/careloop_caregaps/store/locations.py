"""Care-gaps' view of identity's locations: which of them are sensitive."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from careloop_caregaps.store.tables import location_view
from careloop_kit.locations import apply_location_state
from careloop_kit.repository import Repository


@dataclass(frozen=True)
class LocationInfo:
    id: str
    name: str | None
    time_zone: str | None
    sensitive: bool


class LocationViewRepository(Repository):
    async def apply(
        self,
        org_id: str,
        location_id: str,
        *,
        sensitive: bool,
        changed_at: datetime,
        now: datetime,
        name: str | None = None,
        time_zone: str | None = None,
    ) -> bool:
        """Take identity's state of a location; False when a later one is held."""
        return await apply_location_state(
            self._session,
            location_view,
            org_id=org_id,
            location_id=location_id,
            values={"sensitive": sensitive, "name": name, "time_zone": time_zone},
            changed_at=changed_at,
            now=now,
        )

    async def sensitive_ids(self, org_id: str) -> frozenset[str]:
        rows = await self._session.scalars(
            select(location_view.c.id).where(
                location_view.c.org_id == org_id, location_view.c.sensitive.is_(True)
            )
        )
        return frozenset(rows)

    async def get(self, org_id: str, location_id: str) -> LocationInfo | None:
        row = (
            await self._session.execute(
                select(location_view).where(
                    location_view.c.org_id == org_id, location_view.c.id == location_id
                )
            )
        ).first()
        if row is None:
            return None
        return LocationInfo(row.id, row.name, row.time_zone, row.sensitive)
