"""Every service's migration history builds exactly the tables its code declares, and
unwinds to nothing.

A migration that drifts from the tables (a column added to `store/tables.py` and not to a
migration, or a shared platform table created differently) fails here for every service,
not only for the services whose own tests happen to compare them.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from careloop_cli.registry import SERVICES, ServiceEntry
from careloop_kit.db.migrate import alembic_config, upgrade_async

pytestmark = pytest.mark.service


async def _schema(database_url: str, metadata: Any) -> tuple[list[Any], set[str]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:

            def read(sync_conn: Any) -> tuple[list[Any], set[str]]:
                diff = compare_metadata(MigrationContext.configure(sync_conn), metadata)
                return diff, set(inspect(sync_conn).get_table_names())

            return await conn.run_sync(read)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("entry", SERVICES.values(), ids=lambda e: e.name)
async def test_migrations_build_the_declared_tables_and_unwind(
    entry: ServiceEntry, make_database: Callable[[str], Awaitable[str]]
) -> None:
    metadata = importlib.import_module(f"{entry.package}.store.tables").metadata
    database_url = await make_database(f"migrations_{entry.name}")

    await upgrade_async(entry.migrations, database_url)
    diff, tables = await _schema(database_url, metadata)
    assert diff == []
    assert {"outbox_message", "inbox_message", "durable_timer"} <= tables

    config = alembic_config(entry.migrations, database_url)
    await asyncio.to_thread(command.downgrade, config, "base")
    _, tables = await _schema(database_url, metadata)
    assert tables == {"alembic_version"}
