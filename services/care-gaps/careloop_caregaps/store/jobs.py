"""Population evaluation jobs: made queued, each batch claimed by one replica
(`FOR UPDATE SKIP LOCKED` on the job row), its progress saved with the batch."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy import insert, select, update

from careloop_caregaps.store.tables import evaluation_job
from careloop_kit.repository import Repository

JobStatus = Literal["queued", "running", "done", "failed"]


@dataclass(frozen=True)
class Job:
    id: str
    org_id: str
    location_id: str | None
    status: JobStatus
    total: int
    done: int
    changed: int
    cursor: str | None
    as_of: date
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None

    @property
    def percent(self) -> float:
        if self.status == "done":
            return 100.0
        return 0.0 if self.total == 0 else round(100.0 * self.done / self.total, 1)


def _job(row: Any) -> Job:
    return Job(
        id=row.id,
        org_id=row.org_id,
        location_id=row.location_id,
        status=row.status,
        total=row.total,
        done=row.done,
        changed=row.changed,
        cursor=row.cursor,
        as_of=row.as_of,
        requested_by=row.requested_by,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=row.error,
    )


class JobRepository(Repository):
    async def add(
        self,
        job_id: str,
        *,
        org_id: str,
        location_id: str | None,
        as_of: date,
        requested_by: str,
        now: datetime,
    ) -> Job:
        row = (
            await self._session.execute(
                insert(evaluation_job)
                .values(
                    id=job_id,
                    org_id=org_id,
                    location_id=location_id,
                    status="queued",
                    total=0,
                    done=0,
                    changed=0,
                    as_of=as_of,
                    requested_by=requested_by,
                    created_at=now,
                )
                .returning(evaluation_job)
            )
        ).one()
        return _job(row)

    async def get(self, org_id: str, job_id: str) -> Job | None:
        row = await self._row(evaluation_job, org_id, job_id)
        return None if row is None else _job(row)

    async def claim(self) -> Job | None:
        """The oldest unfinished job no other replica is working a batch of, locked for
        this transaction (its batch): a job interrupted by a restart is taken up again
        from its committed cursor."""
        row = (
            await self._session.execute(
                select(evaluation_job)
                .where(evaluation_job.c.status.in_(("queued", "running")))
                .order_by(evaluation_job.c.created_at, evaluation_job.c.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
        ).first()
        return None if row is None else _job(row)

    async def update(self, job_id: str, **values: object) -> None:
        await self._session.execute(
            update(evaluation_job).where(evaluation_job.c.id == job_id).values(**values)
        )
