"""Referrals' view of identity's locations (name, zone, sensitivity). Repositories never
commit: the consumer's inbox transaction does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from careloop_kit.locations import apply_location_state
from careloop_kit.repository import Repository
from careloop_referrals.store.tables import location_view


@dataclass(frozen=True)
class LocationInfo:
    name: str
    time_zone: str
    sensitive: bool


class LocationViewRepository(Repository):
    async def apply(
        self,
        org_id: str,
        location_id: str,
        info: LocationInfo,
        *,
        changed_at: datetime,
        now: datetime,
    ) -> bool:
        """Take identity's state of a location as of `changed_at`; False when the view
        already holds a later state."""
        return await apply_location_state(
            self._session,
            location_view,
            org_id=org_id,
            location_id=location_id,
            values={"name": info.name, "time_zone": info.time_zone, "sensitive": info.sensitive},
            changed_at=changed_at,
            now=now,
        )

    async def get(self, org_id: str, location_id: str) -> LocationInfo | None:
        row = await self._row(location_view, org_id, location_id)
        return None if row is None else LocationInfo(row.name, row.time_zone, row.sensitive)
