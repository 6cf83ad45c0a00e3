"""Every query on idempotency records. The caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_gateway.domain.idempotency import RecordStatus, StoredRecord
from careloop_gateway.store.tables import idempotency_record
from careloop_kit.rows import record_of

T = idempotency_record


def _headers(pairs: list[list[str]] | None) -> list[tuple[str, str]]:
    return [(str(n), str(v)) for n, v in (pairs or [])]


def _record(row: Any) -> StoredRecord:
    return record_of(
        StoredRecord, row._mapping, convert={"status": RecordStatus, "headers": _headers}
    )


class IdempotencyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim(
        self,
        principal_key: str,
        key: str,
        request_hash: str,
        *,
        now: datetime,
        expired_before: datetime,
        abandoned_before: datetime,
    ) -> StoredRecord | None:
        """Take the key for this request; return None when taken, else the live record.

        An expired record, or one left in progress by a replica that died mid-request
        (older than `abandoned_before`), is taken over as if it did not exist.
        """
        inserted = await self.session.execute(
            insert(T)
            .values(
                principal_key=principal_key,
                key=key,
                request_hash=request_hash,
                status=RecordStatus.IN_PROGRESS.value,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=[T.c.principal_key, T.c.key])
            .returning(T.c.id)
        )
        if inserted.scalar_one_or_none() is not None:
            return None
        row = (
            await self.session.execute(
                select(T)
                .where(T.c.principal_key == principal_key, T.c.key == key)
                .with_for_update()
            )
        ).one()
        record = _record(row)
        stale = record.created_at < expired_before or (
            record.status is RecordStatus.IN_PROGRESS and record.created_at < abandoned_before
        )
        if not stale:
            return record
        await self.session.execute(
            update(T)
            .where(T.c.id == row.id)
            .values(
                request_hash=request_hash,
                status=RecordStatus.IN_PROGRESS.value,
                status_code=None,
                headers=None,
                body=None,
                created_at=now,
                completed_at=None,
            )
        )
        return None

    async def complete(
        self,
        principal_key: str,
        key: str,
        *,
        status_code: int,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        now: datetime,
    ) -> None:
        """Store the final response of a claimed key."""
        await self.session.execute(
            update(T)
            .where(T.c.principal_key == principal_key, T.c.key == key)
            .values(
                status=RecordStatus.COMPLETED.value,
                status_code=status_code,
                headers=[list(h) for h in headers],
                body=body,
                completed_at=now,
            )
        )

    async def release(self, principal_key: str, key: str) -> None:
        """Forget a claimed key whose request did not get a final answer."""
        await self.session.execute(
            delete(T).where(
                T.c.principal_key == principal_key,
                T.c.key == key,
                T.c.status == RecordStatus.IN_PROGRESS.value,
            )
        )

    async def purge_expired(self, expired_before: datetime) -> int:
        """Delete records older than the key lifetime; return how many."""
        result = await self.session.execute(delete(T).where(T.c.created_at < expired_before))
        return int(getattr(result, "rowcount", 0) or 0)
