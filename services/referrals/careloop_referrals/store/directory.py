"""The provider directory: entries of one organization, found by id or NPI."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from careloop_kit.repository import Repository
from careloop_kit.rows import record_of, values_of
from careloop_referrals.domain.directory import Channel, Contact, DirectoryEntry, EntryKind
from careloop_referrals.store.tables import directory_entry

_NPI_TAKEN = "uq_directory_entry_npi"


class NpiTaken(Exception):
    """Another entry of the organization already holds this NPI."""


def _entry(row: Any) -> DirectoryEntry:
    return record_of(
        DirectoryEntry,
        row,
        convert={
            "kind": EntryKind,
            "preferred_channel": Channel,
            "contact": lambda value: Contact(**value),
        },
    )


def _values(entry: DirectoryEntry) -> dict[str, Any]:
    return {**values_of(entry), "contact": asdict(entry.contact)}


class DirectoryRepository(Repository):
    async def add(self, entry: DirectoryEntry, *, now: datetime) -> None:
        """Insert an entry; `NpiTaken` when the organization already lists its NPI (a
        savepoint keeps the request's transaction usable)."""
        try:
            async with self._session.begin_nested():
                await self._session.execute(
                    insert(directory_entry).values(**_values(entry), created_at=now, updated_at=now)
                )
        except IntegrityError as exc:
            if _NPI_TAKEN in str(exc.orig):
                raise NpiTaken(entry.npi) from exc
            raise

    async def get(self, org_id: str, entry_id: str) -> DirectoryEntry | None:
        row = await self._row(directory_entry, org_id, entry_id)
        return None if row is None else _entry(row)

    async def save(self, entry: DirectoryEntry, *, now: datetime) -> None:
        try:
            async with self._session.begin_nested():
                await self._session.execute(
                    update(directory_entry)
                    .where(
                        directory_entry.c.org_id == entry.org_id,
                        directory_entry.c.id == entry.id,
                    )
                    .values(**_values(entry), updated_at=now)
                )
        except IntegrityError as exc:
            if _NPI_TAKEN in str(exc.orig):
                raise NpiTaken(entry.npi) from exc
            raise

    async def page(
        self,
        org_id: str,
        *,
        npi: str | None = None,
        specialty: str | None = None,
        after: str | None = None,
        limit: int,
    ) -> list[DirectoryEntry]:
        conditions: list[Any] = [directory_entry.c.org_id == org_id]
        if npi is not None:
            conditions.append(directory_entry.c.npi == npi)
        if specialty is not None:
            conditions.append(directory_entry.c.specialty == specialty)
        if after is not None:
            conditions.append(directory_entry.c.id > after)
        rows = await self._session.execute(
            select(directory_entry).where(*conditions).order_by(directory_entry.c.id).limit(limit)
        )
        return [_entry(row._mapping) for row in rows]
