"""Patients refuses work once Vault or its database counts as down: after
`readiness_failure_threshold` failed readiness checks in a row (the kit's
`test_readiness.py` covers the threshold itself)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import hvac
import pytest

from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.infra.openbao import policy_name
from careloop_kit.infra.postgres import PostgresServer
from careloop_kit.service import check_readiness
from careloop_kit.testing.apps import running_app
from careloop_patients.app import create_app
from careloop_patients.settings import PatientsSettings

pytestmark = pytest.mark.service


async def test_losing_vault_fails_readiness_and_refuses_phi_work(
    patients_settings: PatientsSettings,
    vault_addr: str,
    vault_root_token: str,
    org: dict[str, str],
    unique_id: str,
    patient_body: Callable[..., dict[str, object]],
    issuer: TestTokenIssuer,
) -> None:
    root = hvac.Client(url=vault_addr, token=vault_root_token)
    token = root.auth.token.create(policies=[policy_name("patients")], ttl="10m")["auth"]
    settings = PatientsSettings(
        **{
            **patients_settings.model_dump(),
            "database_url": patients_settings.database_url.get_secret_value(),
            "vault_token": token["client_token"],
            # The test counts the checks itself; the loop would add its own.
            "readiness_interval_s": 3600.0,
            "readiness_failure_threshold": 3,
        }
    )
    threshold = settings.readiness_failure_threshold
    app = create_app(settings, jwks=StaticJwksSource(issuer.jwks_document()))
    async with running_app(app) as client:
        assert (await client.get("/readyz")).status_code == 200
        created = await client.post("/patients", json=patient_body(unique_id), headers=org)
        assert created.status_code == 201

        root.auth.token.revoke(token["client_token"])
        for _ in range(threshold - 1):
            await check_readiness(app.state.runtime)
        flapping = await client.get("/readyz")
        await check_readiness(app.state.runtime)
        ready = await client.get("/readyz")
        refused = await client.get(f"/patients/{created.json()['id']}", headers=org)

    # Below the threshold the failure is reported, not yet acted on.
    assert flapping.status_code == 200
    assert flapping.json()["failures"]["vault"] == threshold - 1
    assert "vault" in flapping.json()["errors"]
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": True, "broker": True, "vault": False}
    assert ready.json()["failures"]["vault"] == threshold
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert "vault" in refused.json()["detail"]


async def test_healthz_is_alive_without_dependencies(
    patients_settings: PatientsSettings, issuer: TestTokenIssuer
) -> None:
    jwks = StaticJwksSource(issuer.jwks_document())
    async with running_app(create_app(patients_settings, jwks=jwks)) as client:
        response = await client.get("/healthz")

    assert response.json() == {"status": "alive", "service": "patients"}


async def test_losing_the_database_fails_readiness_and_refuses_work(
    patients_settings: PatientsSettings,
    postgres_server: PostgresServer,
    org: dict[str, str],
    issuer: TestTokenIssuer,
) -> None:
    database = urlsplit(patients_settings.database_url.get_secret_value()).path.lstrip("/")
    # The readiness loop itself notices the outage, checking often enough to be quick.
    settings = patients_settings.model_copy(update={"readiness_interval_s": 0.1})
    jwks = StaticJwksSource(issuer.jwks_document())
    async with running_app(create_app(settings, jwks=jwks)) as client:
        assert (await client.get("/readyz")).status_code == 200

        await postgres_server.drop_database(database)
        ready = await readyz_until_not_ready(client)
        refused = await client.get("/patients/any", headers=org)

    assert ready["checks"]["database"] is False
    assert ready["failures"]["database"] >= settings.readiness_failure_threshold
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"


async def readyz_until_not_ready(client: httpx.AsyncClient, timeout_s: float = 30) -> Any:
    """The first 503 body of `/readyz`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        response = await client.get("/readyz")
        if response.status_code == 503:
            return response.json()
        if loop.time() > deadline:
            raise AssertionError(f"/readyz still answers {response.status_code}: {response.text}")
        await asyncio.sleep(0.1)
