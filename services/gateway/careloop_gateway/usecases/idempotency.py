"""Idempotency records of POSTs with an `Idempotency-Key`: claim a key before forwarding,
then keep the final answer or free the key, and purge records past their lifetime.

Each step is its own short transaction: the forwarded call between claim and complete
may take the whole upstream timeout, and no database transaction stays open across it.
"""

from __future__ import annotations

from datetime import timedelta

from careloop_gateway.domain.idempotency import StoredRecord
from careloop_gateway.settings import GatewaySettings
from careloop_gateway.store.repository import IdempotencyRepository
from careloop_kit.service import Runtime


async def claim_key(
    runtime: Runtime, settings: GatewaySettings, principal: str, key: str, fingerprint: str
) -> StoredRecord | None:
    """Take `key` for this request (None), or return the live record that holds it."""
    now = runtime.clock.now()
    # A replica that died mid-request leaves its claim in progress; after this long the
    # key is taken over rather than answering 409 until it expires.
    lease = timedelta(seconds=2 * settings.upstream_timeout_s + 30)
    async with runtime.sessionmaker() as session, session.begin():
        return await IdempotencyRepository(session).claim(
            principal,
            key,
            fingerprint,
            now=now,
            expired_before=now - timedelta(seconds=settings.idempotency_ttl_s),
            abandoned_before=now - lease,
        )


async def release_key(runtime: Runtime, principal: str, key: str) -> None:
    """Free a claimed key: no final answer, so the client's retry is forwarded again."""
    async with runtime.sessionmaker() as session, session.begin():
        await IdempotencyRepository(session).release(principal, key)


async def complete_key(
    runtime: Runtime,
    principal: str,
    key: str,
    *,
    status_code: int,
    headers: list[tuple[str, str]],
    body: bytes,
) -> None:
    """Keep the final answer under the claimed key, for replay."""
    async with runtime.sessionmaker() as session, session.begin():
        await IdempotencyRepository(session).complete(
            principal,
            key,
            status_code=status_code,
            headers=headers,
            body=body,
            now=runtime.clock.now(),
        )


async def purge_expired_keys(runtime: Runtime, ttl_s: float) -> int:
    """Delete the records older than their lifetime; how many went."""
    expired_before = runtime.clock.now() - timedelta(seconds=ttl_s)
    async with runtime.sessionmaker() as session, session.begin():
        return await IdempotencyRepository(session).purge_expired(expired_before)
