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
from careloop_tasks.app import create_app
from careloop_tasks.settings import TasksSettings


@pytest.fixture
async def tasks_settings(
    service_settings: ServiceSettingsFactory, topic_prefix: str
) -> TasksSettings:
    return await service_settings(
        TasksSettings,
        "tasks",
        topic_prefix=topic_prefix,
        # Tests fire the due times themselves after moving time (`overdue_worker`).
        overdue_poll_interval_s=3600,
    )


@pytest.fixture
def clock() -> FrozenClock:
    """The service's clock and the token issuer's: tests move time through the loop
    (mint a token after moving it)."""
    return FrozenClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))


@pytest.fixture
def tasks_app(
    tasks_settings: TasksSettings, issuer: TestTokenIssuer, clock: FrozenClock
) -> FastAPI:
    return create_app(tasks_settings, clock=clock, jwks=StaticJwksSource(issuer.jwks_document()))


@pytest.fixture
async def tasks(tasks_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(tasks_app) as client:
        yield client
