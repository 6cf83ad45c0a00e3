"""Readiness of a real service app against real PostgreSQL, Kafka and OpenBao: a
dependency counts as down only after `readiness_failure_threshold` failed checks in a
row, one success counts it up again, and nothing is served before every dependency has
answered once.

The outages are real: the service's database stops accepting connections, Vault is
looked for on a port nobody listens on, or Vault refuses the service's token. The
readiness loop is slowed to once an hour so the test counts the checks itself, calling
what the loop calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from fastapi import APIRouter, FastAPI

from careloop_kit.db import add_platform_tables, make_engine
from careloop_kit.db.tables import service_metadata
from careloop_kit.infra.ports import free_port
from careloop_kit.infra.postgres import PostgresServer
from careloop_kit.service import Runtime, ServiceSpec, check_readiness, create_service_app
from careloop_kit.settings import KitSettings
from careloop_kit.testing.apps import running_app

pytestmark = pytest.mark.service

SERVICE = "scheduling"
THRESHOLD = 3

metadata = service_metadata()
tables = add_platform_tables(metadata)
router = APIRouter()


@router.get("/ping")
async def ping() -> dict[str, str]:
    """A route that needs no dependency, so only the readiness gate can refuse it."""
    return {"pong": "yes"}


@dataclass
class Service:
    client: httpx.AsyncClient
    runtime: Runtime

    async def check(self, times: int = 1) -> None:
        for _ in range(times):
            await check_readiness(self.runtime)

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        response = await self.client.get("/readyz")
        return response.status_code, response.json()


@pytest.fixture
def settings_for(
    make_database: Callable[[str], Awaitable[str]],
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    topic_prefix: str,
) -> Callable[..., Awaitable[KitSettings]]:
    async def build(**overrides: Any) -> KitSettings:
        dsn = await make_database("readiness")
        engine = make_engine(dsn)
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        await engine.dispose()
        values: dict[str, Any] = {
            "environment": "test",
            "database_url": dsn,
            "kafka_bootstrap": kafka_bootstrap,
            "vault_addr": vault_addr,
            "vault_token": vault_tokens[SERVICE],
            "topic_prefix": topic_prefix,
            "log_json": False,
            "readiness_interval_s": 3600.0,
            "readiness_failure_threshold": THRESHOLD,
        }
        return KitSettings(**{**values, **overrides})

    return build


@asynccontextmanager
async def serving(settings: KitSettings) -> AsyncIterator[Service]:
    spec = ServiceSpec(name=SERVICE, metadata=metadata, tables=tables, routers=[router])
    app: FastAPI = create_service_app(spec, settings)
    async with running_app(app) as client:
        yield Service(client, app.state.runtime)


async def allow_connections(postgres: PostgresServer, database: str, allowed: bool) -> None:
    """Open or close `database` to new connections; closing also ends the open ones."""
    conn = await asyncpg.connect(host=str(postgres.socket_dir), user=postgres.superuser)
    try:
        await conn.execute(
            f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}'
        )
        if not allowed:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                database,
            )
    finally:
        await conn.close()


async def test_a_dependency_counts_as_down_only_after_the_threshold_of_failed_checks(
    settings_for: Callable[..., Awaitable[KitSettings]], postgres_server: PostgresServer
) -> None:
    settings = await settings_for()
    database = urlsplit(settings.database_url.get_secret_value()).path.lstrip("/")
    async with serving(settings) as service:
        status, body = await service.readyz()
        assert status == 200, body
        assert body["failures"] == {"database": 0, "broker": 0, "vault": 0}
        assert body["failure_threshold"] == THRESHOLD
        assert body["errors"] == {}

        await allow_connections(postgres_server, database, False)
        try:
            # One failed check: reported, but the service keeps serving.
            await service.check()
            status, body = await service.readyz()
            served = await service.client.get("/ping")
            assert status == 200, body
            assert body["ready"] is True
            assert body["checks"] == {"database": True, "broker": True, "vault": True}
            assert body["failures"] == {"database": 1, "broker": 0, "vault": 0}
            assert "not currently accepting connections" in body["errors"]["database"]
            assert served.status_code == 200

            # Two more in a row: the database counts as down and traffic is refused.
            await service.check(THRESHOLD - 1)
            status, body = await service.readyz()
            refused = await service.client.get("/ping")
            assert status == 503, body
            assert body["ready"] is False
            assert body["checks"] == {"database": False, "broker": True, "vault": True}
            assert body["failures"]["database"] == THRESHOLD
            assert "database" in body["errors"]
            assert refused.status_code == 503
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["detail"].startswith("Not ready (database failing)")
        finally:
            await allow_connections(postgres_server, database, True)

        # One successful check is enough to serve again.
        await service.check()
        status, body = await service.readyz()
        served = await service.client.get("/ping")

    assert status == 200, body
    assert body["checks"] == {"database": True, "broker": True, "vault": True}
    assert body["failures"] == {"database": 0, "broker": 0, "vault": 0}
    assert body["errors"] == {}
    assert served.status_code == 200


async def test_a_success_in_between_starts_the_count_again(
    settings_for: Callable[..., Awaitable[KitSettings]], postgres_server: PostgresServer
) -> None:
    settings = await settings_for()
    database = urlsplit(settings.database_url.get_secret_value()).path.lstrip("/")
    async with serving(settings) as service:
        for _ in range(2):
            await allow_connections(postgres_server, database, False)
            try:
                await service.check(THRESHOLD - 1)
            finally:
                await allow_connections(postgres_server, database, True)
            await service.check()
        await allow_connections(postgres_server, database, False)
        try:
            await service.check(THRESHOLD - 1)
            status, body = await service.readyz()
            served = await service.client.get("/ping")
        finally:
            await allow_connections(postgres_server, database, True)

    # Six failures in all, never three in a row: a flapping database is shown, not refused.
    assert status == 200, body
    assert body["failures"]["database"] == THRESHOLD - 1
    assert "database" in body["errors"]
    assert served.status_code == 200


async def test_nothing_is_served_before_every_dependency_answered_once(
    settings_for: Callable[..., Awaitable[KitSettings]],
) -> None:
    settings = await settings_for(vault_addr=f"http://127.0.0.1:{free_port()}")
    async with serving(settings) as service:
        status, body = await service.readyz()
        refused = await service.client.get("/ping")

    # Start-up checked as often as the threshold allows, then started not ready: Vault
    # never answered.
    assert status == 503, body
    assert body["checks"] == {"database": True, "broker": True, "vault": False}
    assert body["failures"] == {"database": 0, "broker": 0, "vault": THRESHOLD}
    assert body["errors"]["vault"] == "Vault unreachable, sealed, or token invalid"
    assert refused.status_code == 503
    assert refused.json()["detail"].startswith("Not ready (vault failing)")


class WriteTokenOnFirstVaultFailure(logging.Handler):
    """Gives the service a valid Vault token as soon as a readiness check has failed on the
    invalid one it started with."""

    def __init__(self, token_file: Path, token: str) -> None:
        super().__init__(logging.WARNING)
        self.token_file, self.token, self.fired = token_file, token, False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.fired and record.getMessage().startswith("readiness: check of vault failed"):
            self.token_file.write_text(self.token)
            self.fired = True


async def test_a_failed_first_check_is_retried_before_the_service_starts(
    settings_for: Callable[..., Awaitable[KitSettings]],
    vault_tokens: dict[str, str],
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "vault-token"
    token_file.write_text("not-a-vault-token")
    settings = await settings_for(vault_token_file=str(token_file))
    handler = WriteTokenOnFirstVaultFailure(token_file, vault_tokens[SERVICE])
    service_log = logging.getLogger("careloop_kit.service")
    service_log.addHandler(handler)
    try:
        async with serving(settings) as service:
            status, body = await service.readyz()
            served = await service.client.get("/ping")
    finally:
        service_log.removeHandler(handler)

    # Vault refused the first start-up check; the next one, half a second later, answered,
    # so the first request is served instead of waiting for the readiness loop.
    assert handler.fired
    assert status == 200, body
    assert body["failures"] == {"database": 0, "broker": 0, "vault": 0}
    assert served.status_code == 200


async def test_the_readiness_loop_counts_an_outage_and_its_end_on_its_own(
    settings_for: Callable[..., Awaitable[KitSettings]], postgres_server: PostgresServer
) -> None:
    settings = await settings_for(readiness_interval_s=0.1)
    database = urlsplit(settings.database_url.get_secret_value()).path.lstrip("/")
    async with serving(settings) as service:
        await allow_connections(postgres_server, database, False)
        try:
            down = await readyz_until(service, lambda s, b: s == 503)
        finally:
            await allow_connections(postgres_server, database, True)
        up = await readyz_until(service, lambda s, b: s == 200)

    assert down["checks"]["database"] is False
    assert down["failures"]["database"] >= THRESHOLD
    assert up["failures"]["database"] == 0


async def readyz_until(
    service: Service, done: Callable[[int, dict[str, Any]], bool], timeout_s: float = 30
) -> dict[str, Any]:
    """The first `/readyz` body for which `done(status, body)` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        status, body = await service.readyz()
        if done(status, body):
            return body
        if loop.time() > deadline:
            raise AssertionError(f"/readyz still answers {status}: {body}")
        await asyncio.sleep(0.1)
