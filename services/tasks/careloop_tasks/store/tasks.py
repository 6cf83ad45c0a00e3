"""Tasks and their comments: inserts deduplicated by key, saves with optimistic versions,
the worklist's pages and counts.

Ciphertexts arrive sealed: the use cases seal and open through the kit's field port, so
the repository stores bytes and never sees a key.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from careloop_kit.repository import Repository, given, in_scope
from careloop_kit.rows import record_of, values_of
from careloop_tasks.domain.task import ACTIVE, Outcome, Priority, Status, Task
from careloop_tasks.store.tables import task, task_comment

_ENUMS = {
    "priority": Priority,
    "status": Status,
    "outcome": lambda value: None if value is None else Outcome(value),
}


class StaleTask(Exception):
    """The task changed since it was read: another change won."""


@dataclass(frozen=True)
class StoredComment:
    id: str
    author_id: str
    at: datetime
    body_ct: bytes


@dataclass(frozen=True)
class WorklistQuery:
    """What a worklist is limited to; None: no limit on that field."""

    locations: Collection[str] | None
    queue: str | None = None
    location_id: str | None = None
    assignee_id: str | None = None
    statuses: Collection[Status] = ()
    overdue: bool | None = None
    patient_id: str | None = None
    subject_kind: str | None = None
    subject_id: str | None = None


def _task(row: Any) -> Task:
    return record_of(Task, row, convert=_ENUMS)


def _overdue(now: datetime) -> ColumnElement[bool]:
    return and_(task.c.status.in_([s.value for s in ACTIVE]), task.c.due_at <= now)


def _conditions(org_id: str, query: WorklistQuery, now: datetime) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [task.c.org_id == org_id]
    conditions += in_scope(task.c.location_id, query.locations, ())
    conditions += given(
        task,
        queue=query.queue,
        location_id=query.location_id,
        assignee_id=query.assignee_id,
        patient_id=query.patient_id,
        subject_kind=query.subject_kind,
        subject_id=query.subject_id,
    )
    if query.statuses:
        conditions.append(task.c.status.in_([s.value for s in query.statuses]))
    if query.overdue is True:
        conditions.append(_overdue(now))
    elif query.overdue is False:
        conditions.append(or_(task.c.status.not_in([s.value for s in ACTIVE]), task.c.due_at > now))
    return conditions


class TaskRepository(Repository):
    async def add(self, new: Task, *, note_ct: bytes | None = None) -> bool:
        """Insert the task; False (nothing written) when a task with its dedup key
        exists already."""
        statement = (
            pg_insert(task)
            .values(**values_of(new), note_ct=note_ct)
            .on_conflict_do_nothing(constraint="uq_task_dedup_key")
            .returning(task.c.id)
        )
        return await self._session.scalar(statement) is not None

    async def get(self, org_id: str, task_id: str, *, for_update: bool = False) -> Task | None:
        row = await self._row(task, org_id, task_id, for_update=for_update)
        return None if row is None else _task(row)

    async def by_dedup_key(self, org_id: str, dedup_key: str) -> Task | None:
        row = (
            await self._session.execute(
                select(task)
                .where(task.c.org_id == org_id, task.c.dedup_key == dedup_key)
                .with_for_update()
            )
        ).first()
        return None if row is None else _task(row._mapping)

    async def note_of(self, org_id: str, task_id: str) -> bytes | None:
        value: bytes | None = await self._session.scalar(
            select(task.c.note_ct).where(task.c.org_id == org_id, task.c.id == task_id)
        )
        return value

    async def save(self, changed: Task, *, previous_version: int) -> None:
        """Store the task after a change; `StaleTask` when another change was saved
        since it was read (the version decides, not a lock)."""
        values = values_of(changed, leave_out=("id", "org_id", "created_at", "dedup_key"))
        result = await self._session.execute(
            update(task)
            .where(
                task.c.id == changed.id,
                task.c.org_id == changed.org_id,
                task.c.version == previous_version,
            )
            .values(**values)
        )
        if getattr(result, "rowcount", 0) != 1:
            raise StaleTask(changed.id)

    async def mark_overdue_notified(self, found: Task, at: datetime) -> None:
        await self._session.execute(
            update(task)
            .where(task.c.id == found.id, task.c.org_id == found.org_id)
            .values(overdue_notified_at=at)
        )

    async def page(
        self,
        org_id: str,
        query: WorklistQuery,
        *,
        now: datetime,
        after: str | None,
        limit: int,
    ) -> list[Task]:
        """Tasks in id order after `after` (keyset paging)."""
        conditions = _conditions(org_id, query, now)
        if after is not None:
            conditions.append(task.c.id > after)
        rows = await self._session.execute(
            select(task).where(*conditions).order_by(task.c.id).limit(limit)
        )
        return [_task(row._mapping) for row in rows]

    async def counts(
        self, org_id: str, query: WorklistQuery, *, now: datetime
    ) -> tuple[dict[Status, int], int]:
        """How many tasks per status, and how many are overdue."""
        conditions = _conditions(org_id, query, now)
        rows = await self._session.execute(
            select(task.c.status, func.count()).where(*conditions).group_by(task.c.status)
        )
        per_status = {status: 0 for status in Status}
        for status, count in rows:
            per_status[Status(status)] = count
        overdue = await self._session.scalar(
            select(func.count()).select_from(task).where(*conditions, _overdue(now))
        )
        return per_status, int(overdue or 0)

    async def add_comment(
        self, of: Task, *, comment_id: str, author_id: str, at: datetime, body_ct: bytes
    ) -> None:
        await self._session.execute(
            insert(task_comment).values(
                id=comment_id,
                task_id=of.id,
                org_id=of.org_id,
                author_id=author_id,
                at=at,
                body_ct=body_ct,
            )
        )

    async def comments(self, org_id: str, task_id: str) -> list[StoredComment]:
        rows = await self._session.execute(
            select(task_comment)
            .where(task_comment.c.org_id == org_id, task_comment.c.task_id == task_id)
            .order_by(task_comment.c.seq)
        )
        return [StoredComment(row.id, row.author_id, row.at, row.body_ct) for row in rows]
