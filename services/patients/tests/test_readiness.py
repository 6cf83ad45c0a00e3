from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import hvac
import pytest

from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.infra.openbao import policy_name
from careloop_kit.infra.postgres import PostgresServer
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
        }
    )
    jwks = StaticJwksSource(issuer.jwks_document())
    async with running_app(create_app(settings, jwks=jwks)) as client:
        assert (await client.get("/readyz")).status_code == 200
        created = await client.post("/patients", json=patient_body(unique_id), headers=org)
        assert created.status_code == 201

        root.auth.token.revoke(token["client_token"])
        ready = await client.get("/readyz")
        refused = await client.get(f"/patients/{created.json()['id']}", headers=org)

    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": True, "broker": True, "vault": False}
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
    jwks = StaticJwksSource(issuer.jwks_document())
    async with running_app(create_app(patients_settings, jwks=jwks)) as client:
        assert (await client.get("/readyz")).status_code == 200

        await postgres_server.drop_database(database)
        ready = await client.get("/readyz")
        refused = await client.get("/patients/any", headers=org)

    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] is False
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
