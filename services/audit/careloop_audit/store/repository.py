"""Every query on the audit log. Callers own the transaction; nothing here commits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_audit.domain.record import RecordFields
from careloop_audit.domain.verify import ChainHead, StoredRecordView, seal
from careloop_audit.domain.window import Window
from careloop_audit.store.tables import HEAD_ID, audit_chain_head, audit_record
from careloop_contracts.audit import AccessRecordFields
from careloop_kit.rows import record_of

_FIELD_COLUMNS = tuple(RecordFields.__dataclass_fields__)
_FIELDS = [audit_record.c[name] for name in _FIELD_COLUMNS]
_STORED = [*_FIELDS, audit_record.c.canonical, audit_record.c.leaf_hash, audit_record.c.chain_hash]


def _fields(row: Row[Any]) -> RecordFields:
    return record_of(RecordFields, row._mapping, tuples=("phi_categories",))


def _stored(row: Row[Any]) -> StoredRecordView:
    return StoredRecordView(
        fields=_fields(row),
        canonical=bytes(row.canonical),
        leaf_hash=bytes(row.leaf_hash),
        chain_hash=bytes(row.chain_hash),
    )


class AuditLog:
    """The append-only, hash-chained audit log in the service's database."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def append(
        self, record: AccessRecordFields, *, event_id: str, recorded_at: datetime
    ) -> int | None:
        """Append the access record that came in event `event_id`, under the head lock;
        returns the new seq, or None if already logged."""
        head = (
            await self._session.execute(
                select(audit_chain_head.c.last_seq, audit_chain_head.c.last_chain_hash)
                .where(audit_chain_head.c.id == HEAD_ID)
                .with_for_update()
            )
        ).one()
        # The same access can reach us twice under two event ids (a re-published
        # outbox row keeps its id, but a replayed dead letter may not): audit_id decides.
        exists = await self._session.scalar(
            select(audit_record.c.seq).where(audit_record.c.audit_id == str(record.audit_id))
        )
        if exists is not None:
            return None
        seq = int(head.last_seq) + 1
        sealed = seal(
            RecordFields.of(record, seq=seq, event_id=event_id, recorded_at=recorded_at),
            bytes(head.last_chain_hash),
        )
        values = sealed.fields.as_json() | {
            "phi_categories": list(record.phi_categories),
            "occurred_at": record.occurred_at,
            "recorded_at": recorded_at,
            "canonical": sealed.canonical,
            "leaf_hash": sealed.leaf_hash,
            "chain_hash": sealed.chain_hash,
        }
        await self._session.execute(audit_record.insert().values(**values))
        await self._session.execute(
            update(audit_chain_head)
            .where(audit_chain_head.c.id == HEAD_ID)
            .values(last_seq=seq, last_chain_hash=sealed.chain_hash, updated_at=recorded_at)
        )
        return seq

    async def head(self) -> ChainHead:
        row = (
            await self._session.execute(
                select(audit_chain_head.c.last_seq, audit_chain_head.c.last_chain_hash).where(
                    audit_chain_head.c.id == HEAD_ID
                )
            )
        ).one()
        return ChainHead(last_seq=int(row.last_seq), last_chain_hash=bytes(row.last_chain_hash))

    async def stream(
        self, *, after_seq: int = 0, up_to_seq: int | None = None, batch: int = 2000
    ) -> AsyncIterator[StoredRecordView]:
        """Records in seq order, read in keyset batches (no long-held cursor)."""
        last = after_seq
        while True:
            query = select(*_STORED).where(audit_record.c.seq > last)
            if up_to_seq is not None:
                query = query.where(audit_record.c.seq <= up_to_seq)
            rows = (
                await self._session.execute(query.order_by(audit_record.c.seq).limit(batch))
            ).all()
            for row in rows:
                yield _stored(row)
            if len(rows) < batch:
                return
            last = int(rows[-1].seq)

    async def leaves(
        self, *, after_seq: int, up_to_seq: int, batch: int = 10_000
    ) -> AsyncIterator[tuple[int, bytes, bytes]]:
        """(seq, leaf hash, chain hash) in seq order: what signing a checkpoint needs."""
        last = after_seq
        while last < up_to_seq:
            rows = (
                await self._session.execute(
                    select(audit_record.c.seq, audit_record.c.leaf_hash, audit_record.c.chain_hash)
                    .where(audit_record.c.seq > last, audit_record.c.seq <= up_to_seq)
                    .order_by(audit_record.c.seq)
                    .limit(batch)
                )
            ).all()
            if not rows:
                return
            for row in rows:
                yield int(row.seq), bytes(row.leaf_hash), bytes(row.chain_hash)
            last = int(rows[-1].seq)

    async def get(self, org_id: str, audit_id: str) -> RecordFields | None:
        row = (
            await self._session.execute(
                select(*_FIELDS).where(
                    audit_record.c.org_id == org_id, audit_record.c.audit_id == audit_id
                )
            )
        ).one_or_none()
        return None if row is None else _fields(row)

    async def page(
        self,
        org_id: str,
        window: Window,
        *,
        patient_id: str | None = None,
        actor_id: str | None = None,
    ) -> Sequence[RecordFields]:
        """Newest first; `window.before_seq` continues a previous page."""
        conditions = [audit_record.c.org_id == org_id]
        if patient_id is not None:
            conditions.append(audit_record.c.patient_id == patient_id)
        if actor_id is not None:
            conditions.append(audit_record.c.actor_id == actor_id)
        if window.since is not None:
            conditions.append(audit_record.c.occurred_at >= window.since)
        if window.until is not None:
            conditions.append(audit_record.c.occurred_at < window.until)
        if window.before_seq is not None:
            conditions.append(audit_record.c.seq < window.before_seq)
        rows = (
            await self._session.execute(
                select(*_FIELDS)
                .where(and_(*conditions))
                .order_by(audit_record.c.seq.desc())
                .limit(window.limit)
            )
        ).all()
        return [_fields(row) for row in rows]


async def begin_snapshot(session: AsyncSession) -> None:
    """Make the session's transaction one consistent, read-only snapshot."""
    await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
