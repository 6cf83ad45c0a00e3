from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

import careloop_identity
from careloop_identity.app import create_app
from careloop_identity.settings import IdentitySettings
from careloop_kit.clock import FrozenClock
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.testing.apps import running_app

MIGRATIONS = Path(careloop_identity.__file__).parent / "migrations"
BOOTSTRAP_TOKEN = "test-bootstrap-token"
ADMIN = {"X-Bootstrap-Token": BOOTSTRAP_TOKEN}


@pytest.fixture
def clock() -> FrozenClock:
    # Starts at the real time, so PyJWT's own wall-clock checks agree with the service.
    return FrozenClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
async def identity_settings(
    make_database: Callable[[str], object],
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    topic_prefix: str,
) -> IdentitySettings:
    dsn = await make_database("identity")  # type: ignore[misc]
    await upgrade_async(MIGRATIONS, dsn)
    return IdentitySettings(
        environment="test",
        database_url=dsn,
        kafka_bootstrap=kafka_bootstrap,
        vault_addr=vault_addr,
        vault_token=vault_tokens["identity"],
        topic_prefix=topic_prefix,
        bootstrap_token=BOOTSTRAP_TOKEN,
        log_json=False,
    )


@pytest.fixture
async def identity(
    identity_settings: IdentitySettings, clock: FrozenClock
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(create_app(identity_settings, clock=clock)) as client:
        yield client
