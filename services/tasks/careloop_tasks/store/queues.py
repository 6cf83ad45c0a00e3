"""Queue members and the round-robin's place in each queue."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from careloop_kit.repository import Repository
from careloop_tasks.store.tables import queue_cursor, queue_member


class QueueRepository(Repository):
    async def members(self, org_id: str, queue: str) -> list[str]:
        rows = await self._session.scalars(
            select(queue_member.c.user_id)
            .where(queue_member.c.org_id == org_id, queue_member.c.queue == queue)
            .order_by(queue_member.c.user_id)
        )
        return list(rows)

    async def add_member(
        self, org_id: str, queue: str, user_id: str, *, added_by: str, at: datetime
    ) -> None:
        await self._session.execute(
            pg_insert(queue_member)
            .values(org_id=org_id, queue=queue, user_id=user_id, added_by=added_by, added_at=at)
            .on_conflict_do_nothing()
        )

    async def remove_member(self, org_id: str, queue: str, user_id: str) -> bool:
        result = await self._session.execute(
            delete(queue_member).where(
                queue_member.c.org_id == org_id,
                queue_member.c.queue == queue,
                queue_member.c.user_id == user_id,
            )
        )
        return bool(getattr(result, "rowcount", 0))

    async def last_assigned(self, org_id: str, queue: str) -> str | None:
        """Who got the queue's last task, the queue's place locked until the caller's
        transaction ends, so two tasks created at once go to two members."""
        # The row must exist to be locked: a first assignment creates it empty-handed.
        await self._session.execute(
            pg_insert(queue_cursor)
            .values(org_id=org_id, queue=queue, last_user_id="")
            .on_conflict_do_nothing()
        )
        last: str | None = await self._session.scalar(
            select(queue_cursor.c.last_user_id)
            .where(queue_cursor.c.org_id == org_id, queue_cursor.c.queue == queue)
            .with_for_update()
        )
        return last or None

    async def set_last_assigned(self, org_id: str, queue: str, user_id: str) -> None:
        await self._session.execute(
            queue_cursor.update()
            .where(queue_cursor.c.org_id == org_id, queue_cursor.c.queue == queue)
            .values(last_user_id=user_id)
        )
