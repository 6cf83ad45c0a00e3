"""A service identity end to end: the messaging service's token, obtained with an
assertion signed by its own Vault key (no shared secret), reads a patient through the
patients service and sees only what SERVICE_GRANTS gives it: contact and preferences.

Identity runs on a real port (its token endpoint and JWKS reached over HTTP, as in
production); patients verifies tokens against identity's published JWKS.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import careloop_identity
import careloop_patients
from careloop_identity.app import create_app as create_identity
from careloop_identity.settings import IdentitySettings
from careloop_kit.auth import ServiceTokenSource, totp
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.testing.apps import running_app, serve_in_task
from careloop_kit.testing.kafka import wait_for_records
from careloop_kit.vault import Vault
from careloop_patients.app import create_app as create_patients
from careloop_patients.settings import PatientsSettings

pytestmark = pytest.mark.e2e

BOOTSTRAP = {"X-Bootstrap-Token": "e2e-service-identity-bootstrap"}
PASSWORD = "correct-Horse-42-battery"


@dataclass
class Platform:
    identity_url: str
    patients: httpx.AsyncClient
    patients_settings: PatientsSettings
    messaging: ServiceTokenSource
    caregaps: ServiceTokenSource


@pytest.fixture
async def platform(
    make_database: Callable[[str], Awaitable[str]],
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    topic_prefix: str,
) -> AsyncIterator[Platform]:
    dsns = {name: await make_database(name) for name in ("identity", "patients")}
    for name, package in (("identity", careloop_identity), ("patients", careloop_patients)):
        await upgrade_async(Path(package.__file__).parent / "migrations", dsns[name])
    common: dict[str, Any] = {
        "environment": "test",
        "kafka_bootstrap": kafka_bootstrap,
        "vault_addr": vault_addr,
        "topic_prefix": topic_prefix,
        "log_json": False,
    }
    identity_app = create_identity(
        IdentitySettings(
            database_url=dsns["identity"],
            vault_token=vault_tokens["identity"],
            bootstrap_token=BOOTSTRAP["X-Bootstrap-Token"],
            **common,
        )
    )
    async with serve_in_task(identity_app) as identity_url:
        patients_settings = PatientsSettings(
            database_url=dsns["patients"],
            vault_token=vault_tokens["patients"],
            auth_jwks_url=f"{identity_url}/.well-known/jwks.json",
            **common,
        )
        # The messaging service does not exist yet; its Vault identity does, and this
        # is exactly what it will run: its own Vault token, identity's token endpoint.
        messaging = ServiceTokenSource(
            Vault(vault_addr, vault_tokens["messaging"]),
            "messaging",
            f"{identity_url}/oauth/token",
        )
        caregaps = ServiceTokenSource(
            Vault(vault_addr, vault_tokens["caregaps"]),
            "caregaps",
            f"{identity_url}/oauth/token",
        )
        async with (
            running_app(create_patients(patients_settings)) as patients,
            messaging,
            caregaps,
        ):
            yield Platform(identity_url, patients, patients_settings, messaging, caregaps)


async def admin_of_new_org(identity_url: str) -> tuple[str, dict[str, str]]:
    """(org id, bearer headers) of the first org admin of a new organization, signed in
    with a second factor (the patients service asks org admins for one)."""
    email = f"admin-{uuid.uuid4().hex[:8]}@example.org"
    async with httpx.AsyncClient(base_url=identity_url) as client:
        org = await client.post(
            "/organizations",
            json={
                "name": "Bayview (synthetic)",
                "admin": {
                    "email": email,
                    "display_name": "Admin (synthetic)",
                    "password": PASSWORD,
                },
            },
            headers=BOOTSTRAP,
        )
        assert org.status_code == 201, org.text
        credentials = {"org_id": org.json()["id"], "email": email, "password": PASSWORD}
        first = await client.post("/auth/login", json=credentials)
        assert first.status_code == 200, first.text
        bearer = {"Authorization": f"Bearer {first.json()['access_token']}"}
        enrolled = await client.post("/auth/mfa/enroll", headers=bearer)
        assert enrolled.status_code == 200, enrolled.text
        secret = totp.from_base32(enrolled.json()["secret"])
        now = datetime.now(UTC)
        verified = await client.post(
            "/auth/mfa/verify", json={"code": totp.totp(secret, now)}, headers=bearer
        )
        assert verified.status_code == 200, verified.text
        # A code is good once: sign in with the next step's (inside the drift window).
        next_code = totp.totp(secret, now + timedelta(seconds=totp.STEP_S))
        signed_in = await client.post("/auth/login", json={**credentials, "otp": next_code})
        assert signed_in.status_code == 200, signed_in.text
    return org.json()["id"], {"Authorization": f"Bearer {signed_in.json()['access_token']}"}


async def test_a_messaging_token_reads_only_contact_and_preferences(
    platform: Platform,
) -> None:
    org_id, admin = await admin_of_new_org(platform.identity_url)
    created = await platform.patients.post(
        "/patients",
        json={
            "name": {"family": "Okafor", "given": ["Ada"]},
            "birth_date": "1984-02-29",
            "sex": "female",
            "phones": ["+1 555 0100 123"],
            "emails": ["ada.okafor@example.org"],
            "address": {"line": ["12 Harbor Rd"], "city": "Bayview", "country": "US"},
            "preferred_language": "en",
            "preferences": {"allowed_channels": ["sms", "email"], "preferred_channel": "sms"},
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    patient_id = created.json()["id"]

    token = await platform.messaging.token(org_id)
    service = {"Authorization": f"Bearer {token}"}
    read = await platform.patients.get(f"/patients/{patient_id}", headers=service)

    assert read.status_code == 200, read.text
    patient = read.json()
    assert patient["withheld_categories"] == ["demographics"]
    assert (patient["name"], patient["birth_date"], patient["sex"]) == (None, None, None)
    assert patient["phones"] == ["+1 555 0100 123"]
    assert patient["emails"] == ["ada.okafor@example.org"]
    assert patient["address"]["city"] == "Bayview"
    assert patient["preferred_language"] == "en"
    assert patient["preferences"]["preferred_channel"] == "sms"

    # Reading is all messaging may do: no search, no change.
    search = await platform.patients.get(
        "/patients", params={"phone": "5550100123"}, headers=service
    )
    assert search.status_code == 403, search.text
    change = await platform.patients.patch(
        f"/patients/{patient_id}", json={"version": patient["version"]}, headers=service
    )
    assert change.status_code == 403, change.text

    # The read is in the patients service's audit trail under the service's identity,
    # with the categories it saw.
    def service_reads(records: list[Any]) -> list[dict[str, Any]]:
        values = [json.loads(r.value) for r in records]
        return [
            v
            for v in values
            if v.get("actor_id") == "service:messaging" and v.get("outcome") == "success"
        ]

    records = await wait_for_records(
        platform.patients_settings.kafka_bootstrap,
        f"{platform.patients_settings.topic_prefix}careloop.patients",
        lambda rs: len(service_reads(rs)) >= 1,
    )
    (audit,) = service_reads(records)
    assert (audit["actor_type"], audit["action"], audit["patient_id"]) == (
        "service",
        "read",
        patient_id,
    )
    assert sorted(audit["phi_categories"]) == ["contact", "preferences"]


async def test_a_caregaps_token_reads_only_demographics_and_no_clinical_facts(
    platform: Platform,
) -> None:
    org_id, admin = await admin_of_new_org(platform.identity_url)
    created = await platform.patients.post(
        "/patients",
        json={
            "name": {"family": "Lindqvist", "given": ["Mara"]},
            "birth_date": "1961-09-12",
            "sex": "female",
            "phones": ["+1 555 0100 456"],
            "preferred_language": "sv",
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    patient_id = created.json()["id"]
    facts = f"/patients/{patient_id}/facts"
    fact = await platform.patients.post(
        facts,
        json={
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
            "subject": {"reference": f"Patient/{patient_id}"},
            "effectiveDateTime": "2026-01-15",
            "valueQuantity": {"value": 6.4, "system": "http://unitsofmeasure.org", "code": "%"},
        },
        headers=admin,
    )
    assert fact.status_code == 201, fact.text

    token = await platform.caregaps.token(org_id)
    service = {"Authorization": f"Bearer {token}"}
    read = await platform.patients.get(f"/patients/{patient_id}", headers=service)

    assert read.status_code == 200, read.text
    patient = read.json()
    # A measure's population is set by age and sex; nothing else of the record.
    assert (patient["birth_date"], patient["sex"]) == ("1961-09-12", "female")
    assert patient["withheld_categories"] == ["contact", "preferences"]
    assert (patient["phones"], patient["preferred_language"]) == ([], None)
    # Facts reach care-gaps as events; the resources themselves are not its to read.
    for response in (
        await platform.patients.get(facts, headers=service),
        await platform.patients.get(f"{facts}/{fact.json()['id']}", headers=service),
    ):
        assert response.status_code == 403, response.text


async def test_a_service_token_stays_in_its_organization(platform: Platform) -> None:
    org_id, admin = await admin_of_new_org(platform.identity_url)
    other_org, _ = await admin_of_new_org(platform.identity_url)
    created = await platform.patients.post(
        "/patients",
        json={
            "name": {"family": "Lindqvist", "given": ["Eva"]},
            "birth_date": "1990-07-01",
            "phones": ["+1 555 0100 456"],
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text

    token = await platform.messaging.token(other_org)
    read = await platform.patients.get(
        f"/patients/{created.json()['id']}", headers={"Authorization": f"Bearer {token}"}
    )

    assert read.status_code == 404, read.text
    assert await platform.messaging.token(org_id) != token
