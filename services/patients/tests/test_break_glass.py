"""Break-glass: a provider's grant opens one patient outside their locations, for a
limited time, and every such access is audited with purpose of use ETREAT."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest

from careloop_kit.testing.kafka import header, wait_for_records
from careloop_kit.testing.services import Mint

pytestmark = pytest.mark.service

ACCESS = "careloop.audit.access.recorded.v1"


def grant(patient_id: str, *, in_s: int, gid: str = "grant-1") -> list[dict[str, object]]:
    return [{"pat": patient_id, "exp": int(time.time()) + in_s, "gid": gid}]


async def test_a_grant_opens_one_patient_outside_the_locations_and_is_audited_etreat(
    patients: httpx.AsyncClient,
    org: dict[str, str],
    mint: Mint,
    unique_id: str,
    patient_body: Callable[..., dict[str, object]],
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    created = await patients.post("/patients", json=patient_body(unique_id), headers=org)
    assert created.status_code == 201, created.text
    record = created.json()
    other = await patients.post(
        "/patients", json=patient_body(f"{unique_id}b", phones=["555 777 1212"]), headers=org
    )
    assert other.status_code == 201, other.text
    doctor = f"doc-{unique_id}"
    base = {"roles": ["provider"], "loc": ["loc-south"], "sub": doctor}

    without = await patients.get(f"/patients/{record['id']}", headers=mint(**base))
    with_grant = mint(**base, bg=grant(record["id"], in_s=3600))
    allowed = await patients.get(f"/patients/{record['id']}", headers=with_grant)
    updated = await patients.patch(
        f"/patients/{record['id']}",
        json={"version": record["version"], "preferred_language": "en"},
        headers=with_grant,
    )
    not_named = await patients.get(f"/patients/{other.json()['id']}", headers=with_grant)
    expired = mint(**base, bg=grant(record["id"], in_s=-1))
    after_expiry = await patients.get(f"/patients/{record['id']}", headers=expired)

    assert without.status_code == 403
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["id"] == record["id"]
    assert updated.status_code == 200, updated.text
    assert updated.json()["preferred_language"] == "en"
    assert not_named.status_code == 403
    assert after_expiry.status_code == 403

    def complete(records: list) -> bool:
        return (
            sum(
                header(r, "ce_type") == ACCESS and json.loads(r.value)["actor_id"] == doctor
                for r in records
            )
            >= 5
        )

    records = await wait_for_records(kafka_bootstrap, f"{topic_prefix}careloop.patients", complete)
    by_doctor = sorted(
        (
            json.loads(r.value)
            for r in records
            if header(r, "ce_type") == ACCESS and json.loads(r.value)["actor_id"] == doctor
        ),
        key=lambda a: a["occurred_at"],
    )
    summary = [(a["action"], a["outcome"], a["purpose_of_use"]) for a in by_doctor]
    assert summary == [
        ("read", "denied", "TREAT"),
        ("read", "success", "ETREAT"),
        ("update", "success", "ETREAT"),
        ("read", "denied", "TREAT"),
        ("read", "denied", "TREAT"),
    ]
    assert by_doctor[1]["patient_id"] == record["id"]
