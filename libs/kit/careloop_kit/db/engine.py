"""Async engine and session factory for one service's own database."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An asyncpg engine; connections are checked before use so a restarted database heals."""
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit (responses are built after it)."""
    return async_sessionmaker(engine, expire_on_commit=False)
