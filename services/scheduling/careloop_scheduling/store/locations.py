"""Scheduling's view of locations, kept from identity's location events."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from careloop_kit.locations import apply_location_state
from careloop_kit.repository import Repository
from careloop_kit.rows import record_of, values_of
from careloop_scheduling.domain.locations import LocationInfo
from careloop_scheduling.store.tables import location

__all__ = ["LocationInfo", "LocationRepository"]


class LocationRepository(Repository):
    """The location view (zone, display name, sensitivity, feature switches)."""

    async def apply(
        self, org_id: str, item: LocationInfo, *, changed_at: datetime, now: datetime
    ) -> bool:
        """Take identity's state of a location as of `changed_at`; False (nothing
        written) when the view already holds a later state."""
        values = values_of(item, leave_out=("id",)) | {"features": dict(item.features)}
        return await apply_location_state(
            self._session,
            location,
            org_id=org_id,
            location_id=item.id,
            values=values,
            changed_at=changed_at,
            now=now,
        )

    async def get(self, org_id: str, location_id: str) -> LocationInfo | None:
        row = await self._row(location, org_id, location_id)
        if row is None:
            return None
        return record_of(LocationInfo, row, convert={"features": dict})

    async def changed_at(self, org_id: str, location_id: str) -> datetime | None:
        """When identity made the change the view holds (None: set before the events)."""
        value: datetime | None = await self._session.scalar(
            select(location.c.changed_at).where(
                location.c.org_id == org_id, location.c.id == location_id
            )
        )
        return value

    async def sensitive_ids(self, org_id: str) -> frozenset[str]:
        """The organization's sensitive locations (a handful at most)."""
        rows = await self._session.scalars(
            select(location.c.id).where(location.c.org_id == org_id, location.c.sensitive)
        )
        return frozenset(rows)

    async def time_zone(self, org_id: str, location_id: str) -> str | None:
        value: str | None = await self._session.scalar(
            select(location.c.time_zone).where(
                location.c.org_id == org_id, location.c.id == location_id
            )
        )
        return value
