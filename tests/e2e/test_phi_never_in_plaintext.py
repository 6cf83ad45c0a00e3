"""A patient named after a unique marker leaves no plaintext PHI in any database or topic."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

import careloop_audit
import careloop_patients
from careloop_audit.app import create_app as create_audit
from careloop_audit.settings import AuditSettings
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.infra.postgres import PostgresServer
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.kafka import read_topic
from careloop_patients.app import create_app as create_patients
from careloop_patients.settings import PatientsSettings

pytestmark = pytest.mark.e2e


def _database_name(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


async def test_no_plaintext_phi_in_database_dumps_or_kafka(
    make_database,  # type: ignore[no-untyped-def]
    postgres_server: PostgresServer,
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    topic_prefix: str,
    unique_id: str,
) -> None:
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
    marker = f"Zq{unique_id}"
    phone_digits = f"555{random.randint(1000000, 9999999)}"
    birth_date = f"19{random.randint(20, 69)}-0{random.randint(1, 9)}-1{random.randint(0, 9)}"
    body = {
        "name": {"family": f"{marker}fam", "given": [f"{marker}giv"]},
        "birth_date": birth_date,
        "phones": [f"({phone_digits[:3]}) {phone_digits[3:6]}-{phone_digits[6:]}"],
        "emails": [f"{marker.lower()}mail@example.org"],
        "address": {"line": [f"{marker} Street 1"], "city": f"{marker}ville"},
    }
    org = {"X-Organization-Id": f"org-{unique_id}", "X-Actor-Id": "clerk-1"}

    async with (
        running_app(create_patients(patients_settings)) as patients,
        running_app(create_audit(audit_settings)) as audit,
    ):
        created = await patients.post("/patients", json=body, headers=org)
        assert created.status_code == 201, created.text
        patient_id = created.json()["id"]
        await patients.patch(
            f"/patients/{patient_id}",
            json={"version": 1, "preferred_language": "fr"},
            headers=org,
        )
        await patients.get("/patients", params={"phone": phone_digits}, headers=org)
        await patients.get(f"/patients/{patient_id}", headers=org)
        await _wait_for_trail(audit, patient_id, org, expected=4)

    haystacks: dict[str, str] = {
        "patients database": postgres_server.dump(_database_name(patients_dsn)),
        "audit database": postgres_server.dump(_database_name(audit_dsn)),
    }
    for topic in await _topics_with_prefix(kafka_bootstrap, topic_prefix):
        parts = []
        for record in await read_topic(kafka_bootstrap, topic):
            parts += [record.key or b"", record.value or b""]
            parts += [value for _, value in record.headers]
        haystacks[f"topic {topic}"] = b"\n".join(parts).decode(errors="replace")
    # The haystacks really hold this patient's rows and events (ids are not PHI).
    holding = [name for name, text in haystacks.items() if patient_id in text]
    assert {"patients database", "audit database"} <= set(holding)
    assert any(name.startswith("topic") for name in holding)

    needles = [
        marker,
        marker.lower(),
        birth_date,
        birth_date.replace("-", ""),
        phone_digits,
        phone_digits[3:],
        f"{phone_digits[3:6]}-{phone_digits[6:]}",
        "mail@example.org",
    ]
    leaks = [
        f"{needle!r} in {name}"
        for name, text in haystacks.items()
        for needle in needles
        if needle.lower() in text.lower()
    ]
    assert leaks == []


async def _wait_for_trail(
    audit: httpx.AsyncClient, patient_id: str, org: dict[str, str], *, expected: int
) -> None:
    for _ in range(150):
        response = await audit.get(f"/audit/patients/{patient_id}/trail", headers=org)
        if response.status_code == 200 and len(response.json()["items"]) >= expected:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"audit trail of {patient_id} incomplete: {response.text}")


async def _topics_with_prefix(bootstrap: str, prefix: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return sorted(t for t in await admin.list_topics() if t.startswith(prefix))
    finally:
        await admin.close()
