"""Walk a table in key order, one short transaction per batch.

The maintenance jobs (rewrapping data keys, resealing old ciphertexts, re-indexing) run
while the service serves: each batch locks only its own rows and commits before the next
is read, and the next batch starts after the last key seen, so a row the job already
moved past is never read again, however the rows before it change meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, Select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

# A batch's rows as tuples of the query's columns, in its order.
BatchRows = Sequence[Row[*tuple[Any, ...]]]
HandleBatch = Callable[[AsyncSession, BatchRows], Awaitable[None]]


async def for_each_batch(
    sessions: async_sessionmaker[AsyncSession],
    query: Select[*tuple[Any, ...]],
    key: ColumnElement[str],
    handle: HandleBatch,
    *,
    batch_size: int,
    after_batch: Callable[[], None] | None = None,
) -> None:
    """Run `handle` on the rows of `query` in the order of `key` (a unique text column
    it selects), `batch_size` rows at a time, each batch in a transaction of its own;
    `after_batch` runs once that transaction has committed."""
    after = ""
    while True:
        async with sessions.begin() as session:
            rows = (
                await session.execute(query.where(key > after).order_by(key).limit(batch_size))
            ).all()
            if not rows:
                return
            await handle(session, rows)
            after = rows[-1]._mapping[key]
        if after_batch is not None:
            after_batch()
