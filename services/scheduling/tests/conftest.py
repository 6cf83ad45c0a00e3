from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

import careloop_scheduling
from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import FrozenClock
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.testing.apps import running_app
from careloop_scheduling.app import create_app
from careloop_scheduling.settings import SchedulingSettings

from .practice import NOW, Mint, Practice, set_up_practice

MIGRATIONS = Path(careloop_scheduling.__file__).parent / "migrations"


@pytest.fixture
def clock() -> FrozenClock:
    """The service's clock and the token issuer's: tests move time to the visit."""
    return FrozenClock(NOW)


@pytest.fixture
def issuer(clock: FrozenClock) -> TestTokenIssuer:
    return TestTokenIssuer(clock)


@pytest.fixture
async def scheduling_settings(
    make_database: Callable[[str], object],
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    topic_prefix: str,
) -> SchedulingSettings:
    dsn = await make_database("scheduling")  # type: ignore[misc]
    await upgrade_async(MIGRATIONS, dsn)
    return SchedulingSettings(
        environment="test",
        database_url=dsn,
        kafka_bootstrap=kafka_bootstrap,
        vault_addr=vault_addr,
        vault_token=vault_tokens["scheduling"],
        topic_prefix=topic_prefix,
        log_json=False,
    )


@pytest.fixture
async def scheduling(
    scheduling_settings: SchedulingSettings, issuer: TestTokenIssuer, clock: FrozenClock
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        scheduling_settings, clock=clock, jwks=StaticJwksSource(issuer.jwks_document())
    )
    async with running_app(app) as client:
        yield client


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
def org(mint: Mint) -> dict[str, str]:
    return mint()


@pytest.fixture
async def practice(scheduling: httpx.AsyncClient, org: dict[str, str]) -> Practice:
    return await set_up_practice(scheduling, org)
