"""A patient named after a unique marker leaves no plaintext PHI in any database or topic."""

from __future__ import annotations

import random
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from careloop_kit.infra.postgres import PostgresServer
from careloop_kit.testing.kafka import read_topic

pytestmark = pytest.mark.e2e


async def test_no_plaintext_phi_in_database_dumps_or_kafka(
    slice_apps: Any,  # the Slice from conftest
    postgres_server: PostgresServer,
    kafka_bootstrap: str,
    topic_prefix: str,
    unique_id: str,
) -> None:
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
    patients, org = slice_apps.patients, slice_apps.org
    created = await patients.post("/patients", json=body, headers=org)
    assert created.status_code == 201, created.text
    patient_id = created.json()["id"]
    await patients.patch(
        f"/patients/{patient_id}", json={"version": 1, "preferred_language": "fr"}, headers=org
    )
    await patients.get("/patients", params={"phone": phone_digits}, headers=org)
    await patients.get(f"/patients/{patient_id}", headers=org)
    await slice_apps.wait_for_trail(patient_id, expected=4)

    haystacks: dict[str, str] = {
        "patients database": postgres_server.dump(slice_apps.patients_database),
        "audit database": postgres_server.dump(slice_apps.audit_database),
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


async def _topics_with_prefix(bootstrap: str, prefix: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return sorted(t for t in await admin.list_topics() if t.startswith(prefix))
    finally:
        await admin.close()
