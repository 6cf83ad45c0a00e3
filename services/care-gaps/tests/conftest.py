from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from careloop_caregaps.app import create_app
from careloop_caregaps.settings import CaregapsSettings
from fastapi import FastAPI

from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import FrozenClock
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.services import ServiceSettingsFactory


@pytest.fixture
async def caregaps_settings(
    service_settings: ServiceSettingsFactory, topic_prefix: str
) -> CaregapsSettings:
    return await service_settings(
        CaregapsSettings,
        "caregaps",
        topic_prefix=topic_prefix,
        evaluation_poll_interval_s=0.1,
        # Small batches, so a population job of a few patients takes several.
        evaluation_batch_size=2,
        # Campaign steps fire when a test calls the worker's `fire_due()` after moving the
        # clock, not on the background poll (it looks once at start, then rarely).
        campaign_poll_interval_s=3600,
    )


@pytest.fixture
def clock() -> FrozenClock:
    """The service's clock and the token issuer's (evaluations run on its day)."""
    return FrozenClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))


@pytest.fixture
def caregaps_app(
    caregaps_settings: CaregapsSettings, issuer: TestTokenIssuer, clock: FrozenClock
) -> FastAPI:
    return create_app(caregaps_settings, clock=clock, jwks=StaticJwksSource(issuer.jwks_document()))


@pytest.fixture
async def caregaps(caregaps_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(caregaps_app) as client:
        yield client
