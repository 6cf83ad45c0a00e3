"""Queries on the kit's timer table that the kit's `Timers` does not offer."""

from __future__ import annotations

from sqlalchemy import select

from careloop_kit.repository import Repository
from careloop_scheduling.store.tables import platform


class TimerRepository(Repository):
    """Reads of the kit's timer table by key prefix (an appointment's timers)."""

    async def pending_keys(self, key_prefix: str) -> list[str]:
        """Dedup keys of the timers not yet fired nor cancelled that start with the prefix."""
        timer = platform.timer
        rows = await self._session.scalars(
            select(timer.c.dedup_key)
            .where(
                timer.c.dedup_key.startswith(key_prefix, autoescape=True),
                timer.c.fired_at.is_(None),
                timer.c.cancelled_at.is_(None),
            )
            .order_by(timer.c.dedup_key)
        )
        return [key for key in rows if key is not None]
