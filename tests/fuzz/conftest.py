"""Fixtures: patients and audit as their own processes, the gateway in-process on a port.

The services are started with the `careloop` command, as in production, each with its own
database and Vault token, verifying tokens against a JWKS served by this test. The gateway
runs under uvicorn in the test's event loop, so the fuzzer reaches it over real HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
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
from careloop_kit.testing.apps import serve_in_task

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

    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse(token_issuer.jwks_document())

    app = Starlette(routes=[Route("/.well-known/jwks.json", jwks)])
    async with serve_in_task(app) as url:
        yield f"{url}/.well-known/jwks.json"


def _careloop(*args: str) -> list[str]:
    """The `careloop` command line, run with this interpreter."""
    return [sys.executable, "-m", "careloop_cli.main", *args]


@contextlib.asynccontextmanager
async def _service_process(
    service: str,
    *,
    postgres_server: PostgresServer,
    kafka_bootstrap: str,
    vault_addr: str,
    vault_token: str,
    jwks_url: str,
    log_dir: Path,
) -> AsyncIterator[str]:
    """`careloop migrate <service>` then `careloop serve <service>`; yield its URL once ready.

    Its output (tracebacks of any 5xx) goes to `<log_dir>/<service>.log`.
    """
    name = f"{service}_fuzz_{SUFFIX}"
    password = uuid.uuid4().hex
    await postgres_server.create_database(name, owner=name, password=password)
    port = free_port()
    env = {
        **os.environ,
        "CARELOOP_STATE_DIR": tempfile.mkdtemp(prefix=f"careloop-fuzz-{service}-"),
        "CARELOOP_ENVIRONMENT": "test",
        "CARELOOP_DATABASE_URL": postgres_server.dsn_for(name, name, password),
        "CARELOOP_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "CARELOOP_VAULT_ADDR": vault_addr,
        "CARELOOP_VAULT_TOKEN": vault_token,
        "CARELOOP_TOPIC_PREFIX": f"t{SUFFIX}.",
        "CARELOOP_HTTP_PORT": str(port),
        "CARELOOP_AUTH_JWKS_URL": jwks_url,
        "CARELOOP_LOG_JSON": "false",
        "CARELOOP_LOG_LEVEL": "WARNING",
    }
    migrate = await asyncio.create_subprocess_exec(
        *_careloop("migrate", service),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(migrate.communicate(), timeout=120)
    assert migrate.returncode == 0, output.decode()
    log_path = log_dir / f"{service}.log"
    log = log_path.open("wb")
    process = await asyncio.create_subprocess_exec(
        *_careloop("serve", service), env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
            deadline = time.monotonic() + 60
            while True:
                assert process.returncode is None, _read(log_path)
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        break
                assert time.monotonic() < deadline, _read(log_path)
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


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


@pytest.fixture(scope="module")
async def service_urls(
    postgres_server: PostgresServer,
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    jwks_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict[str, str]]:
    """The real patients and audit services, each as its own process; name -> base URL."""
    common: dict[str, Any] = {
        "postgres_server": postgres_server,
        "kafka_bootstrap": kafka_bootstrap,
        "vault_addr": vault_addr,
        "jwks_url": jwks_url,
        "log_dir": tmp_path_factory.mktemp("service-logs"),
    }
    async with (
        _service_process("patients", vault_token=vault_tokens["patients"], **common) as patients,
        _service_process("audit", vault_token=vault_tokens["audit"], **common) as audit,
    ):
        yield {"patients": patients, "audit": audit}


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
