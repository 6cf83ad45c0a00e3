from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

import careloop_audit
import careloop_patients
from careloop_audit.app import create_app as create_audit
from careloop_audit.settings import AuditSettings
from careloop_kit.auth.jwks import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import SystemClock
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.testing.apps import running_app
from careloop_patients.app import create_app as create_patients
from careloop_patients.settings import PatientsSettings


@dataclass
class Slice:
    """The patients and audit services running together against the real infrastructure."""

    patients: httpx.AsyncClient
    audit: httpx.AsyncClient
    patients_settings: PatientsSettings
    audit_settings: AuditSettings
    org: dict[str, str]
    """Headers of an org-wide administrator (MFA done) of this test's organization."""
    auditor: dict[str, str]
    """Headers of an auditor of the same organization."""

    @property
    def patients_database(self) -> str:
        return urlsplit(self.patients_settings.database_url.get_secret_value()).path.lstrip("/")

    @property
    def audit_database(self) -> str:
        return urlsplit(self.audit_settings.database_url.get_secret_value()).path.lstrip("/")

    def cli_env(self, settings: AuditSettings | PatientsSettings) -> dict[str, str]:
        """Environment for running the `careloop` command against this slice."""
        return {
            **os.environ,
            # Keep the command away from a developer's local stack env files.
            "CARELOOP_STATE_DIR": tempfile.mkdtemp(prefix="careloop-cli-"),
            "CARELOOP_ENVIRONMENT": "test",
            "CARELOOP_DATABASE_URL": settings.database_url.get_secret_value(),
            "CARELOOP_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "CARELOOP_VAULT_ADDR": settings.vault_addr,
            "CARELOOP_VAULT_TOKEN": settings.vault_token.get_secret_value(),
            "CARELOOP_TOPIC_PREFIX": settings.topic_prefix,
            "CARELOOP_LOG_JSON": "false",
        }

    async def wait_for_trail(self, patient_id: str, *, expected: int) -> list[dict[str, object]]:
        import asyncio

        body: dict[str, list[dict[str, object]]] = {"items": []}
        for _ in range(150):
            response = await self.audit.get(
                f"/audit/patients/{patient_id}/trail", headers=self.auditor
            )
            if response.status_code == 200:
                body = response.json()
                if len(body["items"]) >= expected:
                    return body["items"]
            await asyncio.sleep(0.2)
        raise AssertionError(f"audit trail of {patient_id} incomplete: {body}")


@pytest.fixture
async def slice_apps(
    make_database: Callable[[str], Awaitable[str]],
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    topic_prefix: str,
    unique_id: str,
) -> AsyncIterator[Slice]:
    patients_dsn = await make_database("patients")
    audit_dsn = await make_database("audit")
    await upgrade_async(Path(careloop_patients.__file__).parent / "migrations", patients_dsn)
    await upgrade_async(Path(careloop_audit.__file__).parent / "migrations", audit_dsn)
    common = {
        "environment": "test",
        "kafka_bootstrap": kafka_bootstrap,
        "vault_addr": vault_addr,
        "topic_prefix": topic_prefix,
        "log_json": False,
    }
    patients_settings = PatientsSettings(
        database_url=patients_dsn, vault_token=vault_tokens["patients"], **common
    )
    audit_settings = AuditSettings(
        database_url=audit_dsn,
        vault_token=vault_tokens["audit"],
        checkpoint_interval_s=0.5,
        **common,
    )
    issuer = TestTokenIssuer(SystemClock())
    org_id = f"org-{unique_id}"

    def headers(subject: str, role: str) -> dict[str, str]:
        token = issuer.mint(org=org_id, sub=subject, roles=[role], loc=["*"], amr=["pwd", "otp"])
        return {"Authorization": f"Bearer {token}"}

    jwks = StaticJwksSource(issuer.jwks_document())
    async with (
        running_app(create_patients(patients_settings, jwks=jwks)) as patients,
        running_app(create_audit(audit_settings, jwks=jwks)) as audit,
    ):
        yield Slice(
            patients,
            audit,
            patients_settings,
            audit_settings,
            headers("clerk-1", "org_admin"),
            headers("auditor-1", "auditor"),
        )


@pytest.fixture
def register(slice_apps: Slice) -> Callable[[dict[str, object]], Awaitable[str]]:
    async def go(body: dict[str, object]) -> str:
        response = await slice_apps.patients.post("/patients", json=body, headers=slice_apps.org)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    return go
