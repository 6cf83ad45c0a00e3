"""Alembic, per service: each service keeps its own history under `migrations/`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config


def alembic_config(migrations_dir: Path, database_url: str) -> Config:
    """An Alembic config for one service's migration folder and database."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(migrations_dir: Path, database_url: str, revision: str = "head") -> None:
    """Bring a service database up to `revision` (blocking)."""
    command.upgrade(alembic_config(migrations_dir, database_url), revision)


async def upgrade_async(migrations_dir: Path, database_url: str, revision: str = "head") -> None:
    """Bring a service database up to `revision` from async code."""
    await asyncio.to_thread(upgrade, migrations_dir, database_url, revision)
