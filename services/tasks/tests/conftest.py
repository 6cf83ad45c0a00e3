from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

import careloop_tasks
from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import FrozenClock
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.testing.apps import running_app
from careloop_tasks.app import create_app
from careloop_tasks.settings import TasksSettings

MIGRATIONS = Path(careloop_tasks.__file__).parent / "migrations"

Mint = Callable[..., dict[str, str]]


@pytest.fixture
async def tasks_settings(
    make_database: Callable[[str], object],
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    topic_prefix: str,
) -> TasksSettings:
    dsn = await make_database("tasks")  # type: ignore[misc]
    await upgrade_async(MIGRATIONS, dsn)
    return TasksSettings(
        environment="test",
        database_url=dsn,
        kafka_bootstrap=kafka_bootstrap,
        vault_addr=vault_addr,
        vault_token=vault_tokens["tasks"],
        topic_prefix=topic_prefix,
        log_json=False,
        # Tests fire the due times themselves after moving time (`overdue_worker`).
        overdue_poll_interval_s=3600,
    )


@pytest.fixture
def clock() -> FrozenClock:
    """The service's clock and the token issuer's: tests move time through the loop
    (mint a token after moving it)."""
    return FrozenClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))


@pytest.fixture
def issuer(clock: FrozenClock) -> TestTokenIssuer:
    """Signs access tokens the way identity does; the app under test trusts its key."""
    return TestTokenIssuer(clock)


@pytest.fixture
def mint(issuer: TestTokenIssuer, unique_id: str) -> Mint:
    """Headers for a token of this test's organization: `mint(roles=[...], loc=[...])`.

    Defaults: an org admin of every location who signed in with a one-time code."""

    def make(**claims: object) -> dict[str, str]:
        values: dict[str, object] = {
            "org": f"org-{unique_id}",
            "sub": f"user-{unique_id}",
            "sid": f"session-{unique_id}",
            "roles": ["org_admin"],
            "loc": ["*"],
            "amr": ["pwd", "otp"],
        }
        values.update(claims)
        return {"Authorization": f"Bearer {issuer.mint(**values)}"}

    return make


@pytest.fixture
def tasks_app(
    tasks_settings: TasksSettings, issuer: TestTokenIssuer, clock: FrozenClock
) -> FastAPI:
    return create_app(tasks_settings, clock=clock, jwks=StaticJwksSource(issuer.jwks_document()))


@pytest.fixture
async def tasks(tasks_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(tasks_app) as client:
        yield client
