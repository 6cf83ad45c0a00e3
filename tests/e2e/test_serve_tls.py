"""A service started the way a container starts it: `careloop migrate` and `careloop serve`
with secrets from a secrets directory and a Vault token file, serving HTTPS with a
certificate from `careloop dev certs`, checked by `careloop probe` against the CA."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from careloop_kit.infra.ports import free_port

from .test_cli import careloop

pytestmark = pytest.mark.e2e


async def test_audit_serves_https_from_secrets_files(
    make_database: Callable[[str], Awaitable[str]],
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    secrets_dir, certs = tmp_path / "secrets", tmp_path / "certs"
    secrets_dir.mkdir()
    (secrets_dir / "careloop_database_url").write_text(await make_database("audit"))
    token_file = tmp_path / "vault-token"
    token_file.write_text(vault_tokens["audit"] + "\n")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CARELOOP_")} | {
        "CARELOOP_STATE_DIR": str(tmp_path / "no-local-stack"),
        "CARELOOP_SECRETS_DIR": str(secrets_dir),
        "CARELOOP_VAULT_TOKEN_FILE": str(token_file),
        "CARELOOP_VAULT_ADDR": vault_addr,
        "CARELOOP_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "CARELOOP_TOPIC_PREFIX": topic_prefix,
        "CARELOOP_HTTP_PORT": str(port),
        "CARELOOP_HTTP_TLS_CERTFILE": str(certs / "audit.crt"),
        "CARELOOP_HTTP_TLS_KEYFILE": str(certs / "audit.key"),
        "CARELOOP_LOG_JSON": "false",
    }
    await asyncio.to_thread(certify_migrate_serve_and_probe, env, certs, port)


def certify_migrate_serve_and_probe(env: dict[str, str], certs: Path, port: int) -> None:
    made = careloop(env, "dev", "certs", "--out", str(certs), "--host", "audit")
    assert made.returncode == 0, made.stderr
    migrated = careloop(env, "migrate", "audit")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr

    server = subprocess.Popen(
        [sys.executable, "-m", "careloop_cli.main", "serve", "audit"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ready = f"https://127.0.0.1:{port}/readyz"
    trusting = env | {"CARELOOP_INTERNAL_CA_FILE": str(certs / "ca.crt")}
    try:
        # Waited for in-process: each `careloop probe` is a Python start (seconds of CPU
        # on a busy runner) that the starting server would have to share the cores with.
        ca = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        deadline = time.monotonic() + 60
        while not _ready(ready, ca):
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            assert time.monotonic() < deadline, "audit never became ready over HTTPS"
            time.sleep(0.2)
        assert careloop(trusting, "probe", ready).returncode == 0
        # The listener speaks only TLS, and only to a client trusting the internal CA.
        assert careloop(trusting, "probe", f"http://127.0.0.1:{port}/readyz").returncode == 1
        assert careloop(env, "probe", ready).returncode == 1
    finally:
        server.terminate()
        server.wait(timeout=30)


def _ready(url: str, ca: ssl.SSLContext) -> bool:
    try:
        return httpx.get(url, verify=ca, timeout=5, trust_env=False).status_code == 200
    except httpx.TransportError:
        return False
