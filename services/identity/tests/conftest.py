from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

import careloop_identity
from careloop_identity.app import create_app
from careloop_identity.settings import IdentitySettings
from careloop_kit.clock import FrozenClock
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.services import ServiceSettingsFactory

MIGRATIONS = Path(careloop_identity.__file__).parent / "migrations"
BOOTSTRAP_TOKEN = "test-bootstrap-token"
ADMIN = {"X-Bootstrap-Token": BOOTSTRAP_TOKEN}


@pytest.fixture
def clock() -> FrozenClock:
    # Starts at the real time, so PyJWT's own wall-clock checks agree with the service.
    return FrozenClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
async def identity_settings(
    service_settings: ServiceSettingsFactory, topic_prefix: str
) -> IdentitySettings:
    return await service_settings(
        IdentitySettings, "identity", topic_prefix=topic_prefix, bootstrap_token=BOOTSTRAP_TOKEN
    )


@pytest.fixture
async def identity(
    identity_settings: IdentitySettings, clock: FrozenClock
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(create_app(identity_settings, clock=clock)) as client:
        yield client
