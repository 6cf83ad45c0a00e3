"""Patients' view of identity's locations: whether each one is sensitive.

Identity owns locations and publishes their whole state on every change; the view
keeps the latest. Repositories never commit: the consumer's inbox transaction does.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.locations import apply_location_state
from careloop_patients.store.tables import location_view


class LocationViewRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def apply(
        self, org_id: str, location_id: str, *, sensitive: bool, changed_at: datetime, now: datetime
    ) -> bool:
        """Take identity's state of a location as of `changed_at`; False (nothing
        written) when the view already holds a later state."""
        return await apply_location_state(
            self._session,
            location_view,
            org_id=org_id,
            location_id=location_id,
            values={"sensitive": sensitive},
            changed_at=changed_at,
            now=now,
        )

    async def is_sensitive(self, org_id: str, location_id: str) -> bool:
        """Whether identity marked the location sensitive (unknown: not sensitive)."""
        value = await self._session.scalar(
            select(location_view.c.sensitive).where(
                location_view.c.org_id == org_id, location_view.c.id == location_id
            )
        )
        return bool(value)
