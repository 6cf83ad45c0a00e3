from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import FrozenClock
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.services import ServiceSettingsFactory
from careloop_referrals.app import create_app
from careloop_referrals.settings import ReferralsSettings


@pytest.fixture
async def referrals_settings(
    service_settings: ServiceSettingsFactory, topic_prefix: str
) -> ReferralsSettings:
    return await service_settings(
        ReferralsSettings,
        "referrals",
        topic_prefix=topic_prefix,
        # Tests fire the stage clocks themselves after moving time (`clock_worker`).
        clock_poll_interval_s=3600,
    )


@pytest.fixture
def clock() -> FrozenClock:
    """The service's clock and the token issuer's: tests move time through the loop
    (mint a token after moving it)."""
    return FrozenClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))


@pytest.fixture
def referrals_app(
    referrals_settings: ReferralsSettings, issuer: TestTokenIssuer, clock: FrozenClock
) -> FastAPI:
    return create_app(
        referrals_settings, clock=clock, jwks=StaticJwksSource(issuer.jwks_document())
    )


@pytest.fixture
async def referrals(referrals_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(referrals_app) as client:
        yield client
