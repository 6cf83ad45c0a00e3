"""Queries of partner API clients. Never commits: the caller's transaction does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_identity.store.repository import fetch_one
from careloop_identity.store.tables import partner_client
from careloop_kit.rows import record_of, values_of


@dataclass(frozen=True)
class StoredClient:
    id: str
    org_id: str
    name: str
    secret_hash: str
    secret_version: int
    scopes: tuple[str, ...]
    locations: tuple[str, ...]
    rate_limit_per_minute: int
    baa_signed_on: date | None
    baa_expires_on: date | None
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime


# JSON lists in the table, tuples in the record.
_LISTS = ("scopes", "locations")


def _client(m: Any) -> StoredClient:
    return record_of(StoredClient, m, tuples=_LISTS)


def _values(client: StoredClient) -> dict[str, Any]:
    return values_of(client, lists=_LISTS, leave_out=("id",))


class ClientRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, client: StoredClient) -> StoredClient:
        await self._session.execute(insert(partner_client).values(id=client.id, **_values(client)))
        return client

    async def get(
        self, org_id: str, client_id: str, *, for_update: bool = False
    ) -> StoredClient | None:
        """A client of the organization (None for another organization's client)."""
        query = select(partner_client).where(
            partner_client.c.org_id == org_id, partner_client.c.id == client_id
        )
        return await fetch_one(self._session, query, _client, for_update=for_update)

    async def find(self, client_id: str) -> StoredClient | None:
        """A client by its id alone: the token endpoint knows no organization yet."""
        query = select(partner_client).where(partner_client.c.id == client_id)
        return await fetch_one(self._session, query, _client)

    async def list_for_org(self, org_id: str, limit: int) -> list[StoredClient]:
        rows = await self._session.execute(
            select(partner_client)
            .where(partner_client.c.org_id == org_id)
            .order_by(partner_client.c.created_at, partner_client.c.id)
            .limit(limit)
        )
        return [_client(r._mapping) for r in rows]

    async def save(self, client: StoredClient) -> StoredClient:
        """Write every column of an existing client (its id and organization never change)."""
        await self._session.execute(
            update(partner_client)
            .where(partner_client.c.id == client.id, partner_client.c.org_id == client.org_id)
            .values(**_values(client))
        )
        return client
