from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import FrozenClock
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.services import Mint, ServiceSettingsFactory
from careloop_scheduling.app import create_app
from careloop_scheduling.settings import SchedulingSettings

from .practice import NOW, Practice, set_up_practice


@pytest.fixture
def clock() -> FrozenClock:
    """The service's clock and the token issuer's: tests move time to the visit."""
    return FrozenClock(NOW)


@pytest.fixture
async def scheduling_settings(
    service_settings: ServiceSettingsFactory, topic_prefix: str
) -> SchedulingSettings:
    return await service_settings(SchedulingSettings, "scheduling", topic_prefix=topic_prefix)


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
def org(mint: Mint) -> dict[str, str]:
    return mint()


@pytest.fixture
async def practice(scheduling: httpx.AsyncClient, org: dict[str, str]) -> Practice:
    return await set_up_practice(scheduling, org)
