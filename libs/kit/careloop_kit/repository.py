"""The base of every repository (one aggregate's tables on the caller's session), new
ids, the tenant's row by id and the filters of a listing.

A repository never commits: the request, event or timer boundary does, so a state
change, its outbox rows, the inbox mark and the audit record commit together.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any
from uuid import uuid4

from sqlalchemy import ColumnElement, RowMapping, Table, select
from sqlalchemy.ext.asyncio import AsyncSession


def new_id() -> str:
    """A new random id for a row (a UUID4 string)."""
    return str(uuid4())


def given(table: Table, **values: object) -> list[ColumnElement[bool]]:
    """A listing's filters: `column == value` for each value given (None: any)."""
    return [table.c[name] == value for name, value in values.items() if value is not None]


def in_scope(
    location: ColumnElement[Any], locations: Collection[str] | None, hidden: Collection[str]
) -> list[ColumnElement[bool]]:
    """A listing's location filters: only the caller's `locations` (None: every one),
    none of the `hidden` ones (sensitive locations the caller may not see)."""
    conditions: list[ColumnElement[bool]] = []
    if locations is not None:
        conditions.append(location.in_(list(locations)))
    if hidden:
        conditions.append(location.not_in(list(hidden)))
    return conditions


class Repository:
    """A repository of one aggregate, on the caller's session."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def _row(
        self,
        table: Table,
        org_id: str,
        row_id: str,
        *,
        for_update: bool = False,
        read: bool = False,
        nowait: bool = False,
    ) -> RowMapping | None:
        """The organization's row of `table` with the id `row_id`, or None (another
        tenant's row looks the same). `for_update`: locked (`read`: share-locked;
        `nowait`: raise at once if someone holds it)."""
        query = select(table).where(table.c.org_id == org_id, table.c.id == row_id)
        if for_update:
            query = query.with_for_update(read=read, nowait=nowait)
        row = (await self._session.execute(query)).first()
        return None if row is None else row._mapping
