"""Care-gaps' migration builds exactly the tables `store/tables.py` declares and unwinds
to nothing (the repository-wide migration test covers it once the CLI registry lists
the service)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from careloop_caregaps.store.tables import metadata
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from careloop_kit.db.migrate import alembic_config, upgrade_async
from careloop_kit.testing.services import migrations_of

pytestmark = pytest.mark.service


async def _schema(database_url: str) -> tuple[list[Any], set[str]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:

            def read(sync_conn: Any) -> tuple[list[Any], set[str]]:
                diff = compare_metadata(MigrationContext.configure(sync_conn), metadata)
                return diff, set(inspect(sync_conn).get_table_names())

            return await conn.run_sync(read)
    finally:
        await engine.dispose()


async def test_the_migration_builds_the_declared_tables_and_unwinds(
    make_database: Callable[[str], Awaitable[str]],
) -> None:
    database_url = await make_database("migrations_caregaps")
    migrations = migrations_of("caregaps")
    await upgrade_async(migrations, database_url)
    diff, tables = await _schema(database_url)
    assert diff == []
    assert {"care_gap", "clinical_fact", "evaluation_job", "campaign", "outbox_message"} <= tables

    await asyncio.to_thread(command.downgrade, alembic_config(migrations, database_url), "base")
    _, tables = await _schema(database_url)
    assert tables == {"alembic_version"}
