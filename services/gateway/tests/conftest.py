"""Fixtures: the real patients service in its own process, the gateway in-process.

The patients service is started with the `careloop` command, as in production, so this
package never imports another service's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import careloop_gateway
from careloop_gateway.app import create_app
from careloop_gateway.settings import GatewaySettings
from careloop_kit.auth.jwks import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import SystemClock
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.infra.ports import free_port
from careloop_kit.testing.apps import running_app, serve_in_task

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

    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse(token_issuer.jwks_document())

    app = Starlette(routes=[Route("/.well-known/jwks.json", jwks)])
    async with serve_in_task(app) as url:
        yield f"{url}/.well-known/jwks.json"


def bearer(issuer: TestTokenIssuer, org_id: str, subject: str) -> dict[str, str]:
    """An org-wide administrator's token (MFA done) for `subject` in `org_id`."""
    token = issuer.mint(org=org_id, sub=subject, roles=["org_admin"], loc=["*"], amr=["pwd", "otp"])
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def gateway_vault_token(vault_addr: str, vault_root_token: str) -> str:
    """A Vault token under the gateway's own policy."""
    from careloop_kit.infra.openbao import bootstrap_vault

    return bootstrap_vault(vault_addr, vault_root_token, ["gateway"])["gateway"]


def _careloop(*args: str) -> list[str]:
    """The `careloop` command line, run with this interpreter."""
    return [sys.executable, "-m", "careloop_cli.main", *args]


@pytest.fixture(scope="module")
async def patients_url(
    postgres_server: PostgresServer,
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    jwks_url: str,
) -> AsyncIterator[str]:
    """The real patients service as its own process, migrated, on a free port."""
    suffix = uuid.uuid4().hex[:10]
    name = f"patients_gw_{suffix}"
    password = uuid.uuid4().hex
    await postgres_server.create_database(name, owner=name, password=password)
    port = free_port()
    env = {
        **os.environ,
        "CARELOOP_STATE_DIR": tempfile.mkdtemp(prefix="careloop-gateway-test-"),
        "CARELOOP_ENVIRONMENT": "test",
        "CARELOOP_DATABASE_URL": postgres_server.dsn_for(name, name, password),
        "CARELOOP_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "CARELOOP_VAULT_ADDR": vault_addr,
        "CARELOOP_VAULT_TOKEN": vault_tokens["patients"],
        "CARELOOP_TOPIC_PREFIX": f"t{suffix}.",
        "CARELOOP_HTTP_PORT": str(port),
        "CARELOOP_AUTH_JWKS_URL": jwks_url,
        "CARELOOP_LOG_JSON": "false",
        "CARELOOP_LOG_LEVEL": "WARNING",
    }
    migrate = await asyncio.create_subprocess_exec(
        *_careloop("migrate", "patients"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(migrate.communicate(), timeout=120)
    assert migrate.returncode == 0, output.decode()
    log = tempfile.NamedTemporaryFile(prefix="patients-", suffix=".log", delete=False)  # noqa: SIM115
    process = await asyncio.create_subprocess_exec(
        *_careloop("serve", "patients"), env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
            deadline = time.monotonic() + 60
            while True:
                assert process.returncode is None, _read(log.name)
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        break
                assert time.monotonic() < deadline, _read(log.name)
                await asyncio.sleep(0.2)
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=20)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()
        os.unlink(log.name)


def _read(path: str) -> str:
    return Path(path).read_text(errors="replace")


GatewayFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


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
    async def factory(
        *, anonymous: bool = False, **overrides: Any
    ) -> AsyncIterator[httpx.AsyncClient]:
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
        async with running_app(app) as client:
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
