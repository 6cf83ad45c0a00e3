"""Fixtures: the real patients service in its own process, the gateway in-process.

The patients service is started with the `careloop` command, as in production, so this
package never imports another service's code.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI

import careloop_gateway
from careloop_gateway.app import create_app
from careloop_gateway.settings import GatewaySettings
from careloop_kit.auth.jwks import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import SystemClock
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.testing.processes import serve_jwks, service_process

if TYPE_CHECKING:
    from careloop_kit.infra.postgres import PostgresServer

MIGRATIONS = Path(careloop_gateway.__file__).parent / "migrations"


@pytest.fixture(scope="session")
def token_issuer() -> TestTokenIssuer:
    """Signs access tokens the way identity does, with a key of its own."""
    return TestTokenIssuer(SystemClock())


@pytest.fixture(scope="module")
async def jwks_url(token_issuer: TestTokenIssuer) -> AsyncIterator[str]:
    """The issuer's JWKS served over HTTP, for services running as their own process."""
    async with serve_jwks(token_issuer) as url:
        yield url


def bearer(issuer: TestTokenIssuer, org_id: str, subject: str) -> dict[str, str]:
    """An org-wide administrator's token (MFA done) for `subject` in `org_id`."""
    token = issuer.mint(org=org_id, sub=subject, roles=["org_admin"], loc=["*"], amr=["pwd", "otp"])
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def gateway_vault_token(vault_addr: str, vault_root_token: str) -> str:
    """A Vault token under the gateway's own policy."""
    from careloop_kit.infra.openbao import bootstrap_vault

    return bootstrap_vault(vault_addr, vault_root_token, ["gateway"])["gateway"]


@pytest.fixture(scope="module")
async def patients_url(
    postgres_server: PostgresServer,
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    jwks_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[str]:
    """The real patients service as its own process, migrated, on a free port."""
    async with service_process(
        "patients",
        postgres_server=postgres_server,
        kafka_bootstrap=kafka_bootstrap,
        vault_addr=vault_addr,
        vault_token=vault_tokens["patients"],
        jwks_url=jwks_url,
        log_dir=tmp_path_factory.mktemp("patients-logs"),
        prefix=f"t{uuid.uuid4().hex[:10]}.",
    ) as url:
        yield url


class GatewayClient(httpx.AsyncClient):
    """A client of the in-process gateway, calling from `address` (the client address
    the gateway sees); `from_address` gives another one to the same gateway."""

    def __init__(self, app: FastAPI, address: str = "127.0.0.1") -> None:
        super().__init__(
            transport=httpx.ASGITransport(app=app, client=(address, 40_000)),
            base_url="http://gateway",
        )
        self.app = app

    def from_address(self, address: str) -> GatewayClient:
        return GatewayClient(self.app, address)


GatewayFactory = Callable[..., AbstractAsyncContextManager[GatewayClient]]


@pytest.fixture
def make_gateway(
    make_database: Callable[[str], Any],
    kafka_bootstrap: str,
    vault_addr: str,
    gateway_vault_token: str,
    topic_prefix: str,
    token_issuer: TestTokenIssuer,
) -> GatewayFactory:
    """`async with make_gateway(routes={...}, **settings) as client:` a running gateway.

    The client sends a valid access token by default; `anonymous=True` sends none.
    """

    @asynccontextmanager
    async def factory(*, anonymous: bool = False, **overrides: Any) -> AsyncIterator[GatewayClient]:
        dsn = await make_database("gateway")
        await upgrade_async(MIGRATIONS, dsn)
        settings = GatewaySettings(
            environment="test",
            database_url=dsn,
            kafka_bootstrap=kafka_bootstrap,
            vault_addr=vault_addr,
            vault_token=gateway_vault_token,
            topic_prefix=topic_prefix,
            log_json=False,
            **overrides,
        )
        app: FastAPI = create_app(settings, jwks=StaticJwksSource(token_issuer.jwks_document()))
        async with app.router.lifespan_context(app), GatewayClient(app) as client:
            if not anonymous:
                client.headers.update(bearer(token_issuer, "org-gateway-tests", "gateway-tester"))
            yield client

    return factory


@pytest.fixture
def org(unique_id: str, token_issuer: TestTokenIssuer) -> dict[str, str]:
    return bearer(token_issuer, f"org-{unique_id}", f"user-{unique_id}")


def new_patient(marker: str, **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "location_id": "loc-north",
        "name": {"family": f"Fam{marker}", "given": [f"Giv{marker}"]},
        "birth_date": "1980-04-02",
        "sex": "female",
        "phones": ["(555) 201-3344"],
        "emails": [f"{marker}@example.org"],
    }
    body.update(overrides)
    return body
