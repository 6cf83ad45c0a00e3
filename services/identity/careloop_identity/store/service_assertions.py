"""Service-identity assertions already exchanged, so none is accepted twice.

An assertion (RFC 7523) is a bearer credential while it lives: whoever copies it could
trade it for a token. Its `jti` is kept until the assertion would be refused as expired
anyway; after that the row is useless and is purged.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_identity.store.tables import service_assertion


class ServiceAssertionRepository:
    """The seen-`jti` store of service assertions."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def consume(self, jti: str, service: str, expires_at: datetime) -> bool:
        """Record `jti` as used; False when it was already used (a replay).

        Two requests racing with the same `jti` meet at the primary key: the second
        waits for the first transaction and then inserts nothing.
        """
        result = await self._session.execute(
            insert(service_assertion)
            .values(jti=jti, service=service, expires_at=expires_at)
            .on_conflict_do_nothing(index_elements=[service_assertion.c.jti])
            .returning(service_assertion.c.jti)
        )
        return result.first() is not None

    async def purge_expired(self, now: datetime) -> None:
        """Forget assertions that can no longer be accepted (they expired)."""
        await self._session.execute(
            delete(service_assertion).where(service_assertion.c.expires_at < now)
        )
