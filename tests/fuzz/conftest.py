"""Fixtures: patients and audit as their own processes, the gateway in-process on a port.

The services are started with the `careloop` command, as in production, each with its own
database and Vault token, verifying tokens against a JWKS served by this test. The gateway
runs under uvicorn in the test's event loop, so the fuzzer reaches it over real HTTP.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import careloop_gateway
from careloop_gateway.app import create_app
from careloop_gateway.settings import GatewaySettings
from careloop_kit.auth.jwks import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import SystemClock
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.testing.apps import serve_in_task
from careloop_kit.testing.processes import serve_jwks, service_processes

if TYPE_CHECKING:
    from careloop_kit.infra.postgres import PostgresServer

GATEWAY_MIGRATIONS = Path(careloop_gateway.__file__).parent / "migrations"
SUFFIX = uuid.uuid4().hex[:10]
"""Names this module's databases and topics, so that runs never clash."""


@pytest.fixture(scope="module")
def token_issuer() -> TestTokenIssuer:
    """Signs access tokens the way identity does, with a key of its own."""
    return TestTokenIssuer(SystemClock())


@pytest.fixture(scope="module")
async def jwks_url(token_issuer: TestTokenIssuer) -> AsyncIterator[str]:
    """The issuer's JWKS served over HTTP, for the services running as their own process."""
    async with serve_jwks(token_issuer) as url:
        yield url


@pytest.fixture(scope="module")
async def service_urls(
    postgres_server: PostgresServer,
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    jwks_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict[str, str]]:
    """The real patients and audit services, each as its own process, started at once;
    name -> base URL."""
    async with service_processes(
        {service: vault_tokens[service] for service in ("patients", "audit")},
        postgres_server=postgres_server,
        kafka_bootstrap=kafka_bootstrap,
        vault_addr=vault_addr,
        jwks_url=jwks_url,
        log_dir=tmp_path_factory.mktemp("service-logs"),
        prefix=f"t{SUFFIX}.",
    ) as urls:
        yield urls


@pytest.fixture(scope="module")
def gateway_vault_token(vault_addr: str, vault_root_token: str) -> str:
    """A Vault token under the gateway's own policy."""
    from careloop_kit.infra.openbao import bootstrap_vault

    return bootstrap_vault(vault_addr, vault_root_token, ["gateway"])["gateway"]


@pytest.fixture(scope="module")
async def gateway_url(
    postgres_server: PostgresServer,
    kafka_bootstrap: str,
    vault_addr: str,
    gateway_vault_token: str,
    service_urls: dict[str, str],
    token_issuer: TestTokenIssuer,
) -> AsyncIterator[str]:
    """The gateway in-process under uvicorn, routing to the two services; its base URL.

    Rate limits are lifted: the fuzzer sends far more than a principal's burst.
    """
    name = f"gateway_fuzz_{SUFFIX}"
    password = uuid.uuid4().hex
    await postgres_server.create_database(name, owner=name, password=password)
    dsn = postgres_server.dsn_for(name, name, password)
    await upgrade_async(GATEWAY_MIGRATIONS, dsn)
    settings = GatewaySettings(
        environment="test",
        database_url=dsn,
        kafka_bootstrap=kafka_bootstrap,
        vault_addr=vault_addr,
        vault_token=gateway_vault_token,
        topic_prefix=f"t{SUFFIX}.",
        log_json=False,
        routes=service_urls,
        rate_limit_per_minute=1_000_000,
        rate_limit_burst=1_000_000,
    )
    app = create_app(settings, jwks=StaticJwksSource(token_issuer.jwks_document()))
    async with serve_in_task(app) as url:
        yield url
