"""Careloop services as their own processes, started the way production starts them
(`careloop migrate` then `careloop serve`), for tests that must not import them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.infra.ports import free_port
from careloop_kit.testing.apps import entered_at_once, serve_in_task

if TYPE_CHECKING:
    from careloop_kit.infra.postgres import PostgresServer


@contextlib.asynccontextmanager
async def serve_jwks(issuer: TestTokenIssuer) -> AsyncIterator[str]:
    """The issuer's JWKS served over HTTP in this event loop; yields its URL."""

    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse(issuer.jwks_document())

    app = Starlette(routes=[Route("/.well-known/jwks.json", jwks)])
    async with serve_in_task(app) as url:
        yield f"{url}/.well-known/jwks.json"


def _careloop(*args: str) -> list[str]:
    """The `careloop` command line, run with this interpreter."""
    return [sys.executable, "-m", "careloop_cli.main", *args]


@contextlib.asynccontextmanager
async def service_process(
    service: str,
    *,
    postgres_server: PostgresServer,
    kafka_bootstrap: str,
    vault_addr: str,
    vault_token: str,
    jwks_url: str,
    log_dir: Path,
    prefix: str,
) -> AsyncIterator[str]:
    """`careloop migrate <service>` then `careloop serve <service>` in a database of its
    own, verifying tokens against `jwks_url`; yield its URL once ready.

    Its output (tracebacks of any 5xx) goes to `<log_dir>/<service>.log`.
    """
    name = f"{service}_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    await postgres_server.create_database(name, owner=name, password=password)
    port = free_port()
    env = {
        **os.environ,
        # Away from a developer's local stack env files.
        "CARELOOP_STATE_DIR": tempfile.mkdtemp(prefix=f"careloop-{service}-"),
        "CARELOOP_ENVIRONMENT": "test",
        "CARELOOP_DATABASE_URL": postgres_server.dsn_for(name, name, password),
        "CARELOOP_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "CARELOOP_VAULT_ADDR": vault_addr,
        "CARELOOP_VAULT_TOKEN": vault_token,
        "CARELOOP_TOPIC_PREFIX": prefix,
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


@contextlib.asynccontextmanager
async def service_processes(
    vault_tokens: Mapping[str, str],
    *,
    postgres_server: PostgresServer,
    kafka_bootstrap: str,
    vault_addr: str,
    jwks_url: str,
    log_dir: Path,
    prefix: str,
) -> AsyncIterator[dict[str, str]]:
    """`service_process` for each service named in `vault_tokens` (name -> its Vault
    token), all started at once; yield name -> URL once every one is ready.

    Most of a start is the two processes waiting on imports, the database and the
    broker, so starting them side by side costs little more than the slowest one. All
    are stopped on the way out, also when one of them failed to start."""
    starts = {
        service: service_process(
            service,
            postgres_server=postgres_server,
            kafka_bootstrap=kafka_bootstrap,
            vault_addr=vault_addr,
            vault_token=vault_token,
            jwks_url=jwks_url,
            log_dir=log_dir,
            prefix=prefix,
        )
        for service, vault_token in vault_tokens.items()
    }
    async with entered_at_once(starts) as urls:
        yield urls


def _read(path: Path) -> str:
    return path.read_text(errors="replace")
