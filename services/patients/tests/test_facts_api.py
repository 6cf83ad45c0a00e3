"""Clinical facts through the API, on real PostgreSQL, Kafka and OpenBao. Every code,
date, value and display here is synthetic (markers made for the test)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import hvac
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.permissions import service_subject
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.kafka import header, wait_for_records
from careloop_kit.testing.services import Mint
from careloop_patients.app import create_app
from careloop_patients.rewrap import reindex
from careloop_patients.settings import PatientsSettings

pytestmark = pytest.mark.service

ACCESS = "careloop.audit.access.recorded.v1"
RECORDED = "careloop.patients.fact.recorded.v1"
LOINC, ICD, CVX = (
    "http://loinc.org",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://hl7.org/fhir/sid/cvx",
)
UCUM = "http://unitsofmeasure.org"
SOURCE_TAG = "https://careloop.dev/fhir/fact-source"


async def register(
    client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, object]
) -> str:
    response = await client.post("/patients", json=body, headers=headers)
    assert response.status_code == 201, response.text
    patient_id: str = response.json()["id"]
    return patient_id


def coded(system: str, code: str, marker: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": f"Display{marker}"}]}


def resources(patient_id: str, marker: str) -> dict[str, dict[str, Any]]:
    """One synthetic resource of each kind, keyed by kind."""
    subject = {"reference": f"Patient/{patient_id}"}
    note = [{"text": f"Note{marker}"}]
    return {
        "condition": {
            "resourceType": "Condition",
            "id": f"cond-{marker}",
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "active",
                    }
                ]
            },
            "code": coded(ICD, "E11.9", marker),
            "subject": subject,
            "onsetDateTime": "2019-03-14",
            "note": note,
        },
        "observation": {
            "resourceType": "Observation",
            "identifier": [{"system": "urn:example:lab", "value": f"obs-{marker}"}],
            "status": "final",
            "code": coded(LOINC, "85354-9", marker),
            "subject": subject,
            "effectiveDateTime": "2026-02-03T09:30:00Z",
            "component": [
                {
                    "code": coded(LOINC, "8480-6", marker),
                    "valueQuantity": {
                        "value": 131,
                        "unit": "mmHg",
                        "system": UCUM,
                        "code": "mm[Hg]",
                    },
                },
                {
                    "code": coded(LOINC, "8462-4", marker),
                    "valueQuantity": {
                        "value": 84,
                        "unit": "mmHg",
                        "system": UCUM,
                        "code": "mm[Hg]",
                    },
                },
            ],
            "note": note,
        },
        "procedure": {
            "resourceType": "Procedure",
            "status": "completed",
            "code": coded("http://www.ama-assn.org/go/cpt", "45378", marker),
            "subject": subject,
            "performedDateTime": "2024-08-20",
        },
        "immunization": {
            "resourceType": "Immunization",
            "status": "completed",
            "vaccineCode": coded(CVX, "140", marker),
            "patient": subject,
            "occurrenceDateTime": "2025-10-02",
        },
        "medication-statement": {
            "resourceType": "MedicationStatement",
            "status": "active",
            "medicationCodeableConcept": coded(
                "http://www.nlm.nih.gov/research/umls/rxnorm", "860975", marker
            ),
            "subject": subject,
            "effectivePeriod": {"start": "2025-01-01"},
        },
        "encounter": {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "AMB",
            },
            "type": [coded("urn:oid:2.16.840.1.113883.6.285", "G0438", marker)],
            "subject": subject,
            "period": {"start": "2025-03-04T10:00:00Z", "end": "2025-03-04T10:30:00Z"},
        },
    }


def hba1c(patient_id: str, marker: str, value: float, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"lab-{marker}",
        "status": "final",
        "code": coded(LOINC, "4548-4", marker),
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-01-15",
        "valueQuantity": {"value": value, "unit": "%", "system": UCUM, "code": "%"},
        "note": [{"text": f"Note{marker}"}],
        **extra,
    }


def recorded_events(records: list[Any], patient_id: str) -> list[dict[str, Any]]:
    found = [json.loads(r.value) for r in records if header(r, "ce_type") == RECORDED]
    mine = [e for e in found if e["patient_id"] == patient_id]
    return sorted(mine, key=lambda e: (e["recorded_at"], e["version"]))


async def test_each_kind_round_trips_as_its_fhir_resource_and_is_published(
    patients: httpx.AsyncClient,
    org: dict[str, str],
    patient_body: Callable[..., dict[str, object]],
    unique_id: str,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    patient_id = await register(patients, org, patient_body(unique_id))
    sent = resources(patient_id, unique_id)
    ids: dict[str, str] = {}
    for kind, resource in sent.items():
        response = await patients.post(f"/patients/{patient_id}/facts", json=resource, headers=org)
        assert response.status_code == 201, (kind, response.text)
        assert response.headers["content-type"] == "application/fhir+json"
        body = response.json()
        ids[kind] = body["id"]
        assert body["resourceType"] == resource["resourceType"]
        assert body["meta"]["versionId"] == "1"
        assert body["meta"]["tag"] == [{"system": SOURCE_TAG, "code": "staff-entry"}]

    for kind, fact_id in ids.items():
        read = await patients.get(f"/patients/{patient_id}/facts/{fact_id}", headers=org)
        assert read.status_code == 200, read.text
        got, original = read.json(), sent[kind]
        assert got["id"] == fact_id
        for field, value in original.items():
            if field not in ("id", "meta"):
                assert got[field] == value, (kind, field)

    every = (await patients.get(f"/patients/{patient_id}/facts", headers=org)).json()
    assert (every["resourceType"], every["type"]) == ("Bundle", "searchset")
    assert [e["resource"]["id"] for e in every["entry"]] == list(ids.values())
    only = await patients.get(
        f"/patients/{patient_id}/facts", params={"kind": "observation"}, headers=org
    )
    assert [e["resource"]["id"] for e in only.json()["entry"]] == [ids["observation"]]
    bad_kind = await patients.get(
        f"/patients/{patient_id}/facts", params={"kind": "rumour"}, headers=org
    )
    assert bad_kind.status_code == 422

    topic = f"{topic_prefix}careloop.patients"
    records = await wait_for_records(
        kafka_bootstrap, topic, lambda rs: len(recorded_events(rs, patient_id)) >= 6
    )
    events = {e["kind"]: e for e in recorded_events(records, patient_id)}
    assert set(events) == set(sent)
    bp = events["observation"]
    assert bp["codes"] == [{"system": "loinc", "code": "85354-9"}]
    assert bp["effective_on"] == "2026-02-03"
    assert bp["quantities"] == [
        {"code": {"system": "loinc", "code": "8480-6"}, "value": 131.0, "unit": "mm[Hg]"},
        {"code": {"system": "loinc", "code": "8462-4"}, "value": 84.0, "unit": "mm[Hg]"},
    ]
    assert events["encounter"]["codes"] == [{"system": "hcpcs", "code": "G0438"}]
    assert events["encounter"]["effective_until"] == "2025-03-04"
    assert events["condition"]["status"] == "active"
    assert {e["source"] for e in events.values()} == {"staff-entry"}
    # Codes and numbers only: no display, no note, nothing of the patient's record.
    raw = b"".join(r.value for r in records if header(r, "ce_type") == RECORDED)
    for marker in (f"Display{unique_id}", f"Note{unique_id}", f"Fam{unique_id}"):
        assert marker.encode() not in raw


async def test_the_same_fact_twice_is_one_fact_and_a_correction_its_next_version(
    patients: httpx.AsyncClient,
    patients_settings: PatientsSettings,
    org: dict[str, str],
    patient_body: Callable[..., dict[str, object]],
    unique_id: str,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    patient_id = await register(patients, org, patient_body(unique_id))
    url = f"/patients/{patient_id}/facts"

    first = await patients.post(url, json=hba1c(patient_id, unique_id, 7.4), headers=org)
    # Same content, keys in another order: the fact already held.
    shuffled = dict(reversed(list(hba1c(patient_id, unique_id, 7.4).items())))
    again = await patients.post(url, json=shuffled, headers=org)
    corrected = await patients.post(url, json=hba1c(patient_id, unique_id, 7.9), headers=org)
    # The same source id from the EHR is another source's fact.
    imported = await patients.post(
        url,
        json=hba1c(
            patient_id,
            unique_id,
            7.9,
            meta={"tag": [{"system": SOURCE_TAG, "code": "ehr-import"}]},
        ),
        headers=org,
    )
    assert [r.status_code for r in (first, again, corrected, imported)] == [201, 200, 200, 201]
    fact_id = first.json()["id"]
    assert again.json()["id"] == corrected.json()["id"] == fact_id
    assert again.json()["meta"]["versionId"] == "1"
    assert corrected.json()["meta"]["versionId"] == "2"
    assert corrected.json()["valueQuantity"]["value"] == 7.9
    assert imported.json()["id"] != fact_id
    assert imported.json()["meta"]["tag"][0]["code"] == "ehr-import"

    withdrawn = await patients.post(f"{url}/{fact_id}/entered-in-error", headers=org)
    twice = await patients.post(f"{url}/{fact_id}/entered-in-error", headers=org)
    assert withdrawn.status_code == twice.status_code == 200, withdrawn.text
    assert withdrawn.json()["status"] == "entered-in-error"
    assert withdrawn.json()["meta"]["versionId"] == twice.json()["meta"]["versionId"] == "3"
    missing = await patients.post(f"{url}/no-such-fact/entered-in-error", headers=org)
    assert missing.status_code == 404

    engine = create_async_engine(patients_settings.database_url.get_secret_value())
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text("SELECT id, version, source FROM clinical_facts WHERE patient_id = :p"),
                    {"p": patient_id},
                )
            ).all()
    finally:
        await engine.dispose()
    assert sorted((r.version, r.source) for r in rows) == [(1, "ehr-import"), (3, "staff-entry")]

    topic = f"{topic_prefix}careloop.patients"
    records = await wait_for_records(
        kafka_bootstrap, topic, lambda rs: len(recorded_events(rs, patient_id)) >= 4
    )
    events = recorded_events(records, patient_id)
    mine = [e for e in events if e["fact_id"] == fact_id]
    assert [(e["version"], e["status"]) for e in mine] == [
        (1, "final"),
        (2, "final"),
        (3, "entered-in-error"),
    ]
    assert [e["quantities"][0]["value"] for e in mine] == [7.4, 7.9, 7.9]
    assert [e["source"] for e in events if e["fact_id"] != fact_id] == ["ehr-import"]
    assert len(events) == 4


async def test_bad_resources_are_422_with_the_fields_named(
    patients: httpx.AsyncClient,
    org: dict[str, str],
    patient_body: Callable[..., dict[str, object]],
    unique_id: str,
) -> None:
    patient_id = await register(patients, org, patient_body(unique_id))
    url = f"/patients/{patient_id}/facts"
    good = hba1c(patient_id, unique_id, 7.0)

    async def fields(body: Any) -> list[str]:
        response = await patients.post(url, json=body, headers=org)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        return [e["field"] for e in response.json()["errors"]]

    unknown_system = {**good, "code": {"coding": [{"system": "urn:local", "code": "A1"}]}}
    no_system = {**good, "code": {"coding": [{"code": "4548-4"}]}}
    no_date = {k: v for k, v in good.items() if k != "effectiveDateTime"}
    not_ucum = {**good, "valueQuantity": {"value": 7.0, "unit": "percent"}}
    other_patient = {**good, "subject": {"reference": "Patient/someone-else"}}
    not_fhir = {**good, "effectiveDateTime": "last tuesday"}
    bad_source = {**good, "meta": {"tag": [{"system": SOURCE_TAG, "code": "rumour"}]}}

    assert await fields(unknown_system) == ["body.code.coding.0.system"]
    assert await fields(no_system) == ["body.code.coding.0.system"]
    assert await fields(no_date) == ["body.effectiveDateTime"]
    assert await fields(not_ucum) == ["body.valueQuantity"]
    assert await fields(other_patient) == ["body.subject.reference"]
    assert await fields(not_fhir) == ["body.effectiveDateTime"]
    assert await fields(bad_source) == ["body.meta.tag.0.code"]
    assert await fields({"resourceType": "Patient"}) == ["body.resourceType"]
    assert await fields([good]) == ["body"]
    listed = await patients.get(url, headers=org)
    assert listed.json()["total"] == 0


async def test_who_may_reach_facts_is_who_may_reach_the_record_with_clinical_data(
    patients: httpx.AsyncClient,
    org: dict[str, str],
    mint: Mint,
    patient_body: Callable[..., dict[str, object]],
    unique_id: str,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    patient_id = await register(patients, org, patient_body(unique_id, sex="male"))
    url = f"/patients/{patient_id}/facts"
    created = await patients.post(url, json=hba1c(patient_id, unique_id, 6.8), headers=org)
    fact_id = created.json()["id"]

    front_desk = mint(roles=["front_desk"], loc=["loc-north"], sub=f"fd-{unique_id}")
    provider_elsewhere = mint(roles=["provider"], loc=["loc-south"], sub=f"pe-{unique_id}")
    other_org = mint(org=f"org-other-{unique_id}", sub=f"oo-{unique_id}")
    caregaps = mint(act="service", sub=service_subject("caregaps"), roles=[], loc=["*"], amr=[])
    provider = mint(roles=["provider"], loc=["loc-north"], sub=f"pr-{unique_id}")
    tagged = hba1c(
        patient_id, unique_id + "i", 6.1, meta={"tag": [{"system": SOURCE_TAG, "code": "intake"}]}
    )

    for headers, expected in (
        (front_desk, 403),
        (provider_elsewhere, 403),
        (other_org, 404),
        (caregaps, 403),
    ):
        calls = [
            await patients.post(url, json=hba1c(patient_id, unique_id, 6.9), headers=headers),
            await patients.get(url, headers=headers),
            await patients.get(f"{url}/{fact_id}", headers=headers),
            await patients.post(f"{url}/{fact_id}/entered-in-error", headers=headers),
        ]
        assert [c.status_code for c in calls] == [expected] * 4, [c.text for c in calls]
        assert all(c.headers["content-type"] == "application/problem+json" for c in calls)
    # The service identity may not claim a source either (it may not write at all).
    assert (await patients.post(url, json=tagged, headers=caregaps)).status_code == 403

    # A provider of the record's location reads and writes, and may claim a source.
    assert (await patients.get(f"{url}/{fact_id}", headers=provider)).status_code == 200
    intake = await patients.post(url, json=tagged, headers=provider)
    assert intake.status_code == 201, intake.text
    assert intake.json()["meta"]["tag"][0]["code"] == "intake"

    # care-gaps reads the demographics its measures need, nothing else of the record.
    record = await patients.get(f"/patients/{patient_id}", headers=caregaps)
    assert record.status_code == 200, record.text
    body = record.json()
    assert (body["birth_date"], body["sex"]) == ("1980-04-02", "male")
    assert (body["phones"], body["emails"]) == ([], [])
    assert [body[f] for f in ("address", "preferred_language", "preferences")] == [None] * 3
    assert body["withheld_categories"] == ["contact", "preferences"]

    # Every read and write of a fact is on the patient's trail, filed under its FHIR type.
    topic = f"{topic_prefix}careloop.patients"

    def trail(records: list[Any]) -> list[dict[str, Any]]:
        found = [json.loads(r.value) for r in records if header(r, "ce_type") == ACCESS]
        return [
            a for a in found if a["patient_id"] == patient_id and a["resource_type"] != "Patient"
        ]

    records = await wait_for_records(kafka_bootstrap, topic, lambda rs: len(trail(rs)) >= 17)
    accesses = trail(records)
    summary = {(a["actor_id"], a["action"], a["resource_type"], a["outcome"]) for a in accesses}
    assert (f"user-{unique_id}", "create", "Observation", "success") in summary
    assert (f"pr-{unique_id}", "read", "Observation", "success") in summary
    assert (f"pr-{unique_id}", "create", "Observation", "success") in summary
    assert (f"fd-{unique_id}", "create", "Observation", "denied") in summary
    assert (f"fd-{unique_id}", "read", "Bundle", "denied") in summary
    assert (service_subject("caregaps"), "read", "Bundle", "denied") in summary
    reads = [a for a in accesses if a["action"] == "read" and a["outcome"] == "success"]
    assert all(a["phi_categories"] == ["clinical"] for a in reads)
    assert {a["resource_id"] for a in reads} == {fact_id}


async def test_a_dump_of_the_table_shows_no_code_date_value_or_display(
    patients: httpx.AsyncClient,
    patients_settings: PatientsSettings,
    org: dict[str, str],
    patient_body: Callable[..., dict[str, object]],
    unique_id: str,
) -> None:
    patient_id = await register(patients, org, patient_body(unique_id))
    code = f"Z{unique_id}"[:8]
    resource = {
        "resourceType": "Condition",
        "identifier": [{"system": "urn:example:ehr", "value": f"SrcId{unique_id}"}],
        "code": {
            "coding": [{"system": ICD, "code": code, "display": f"Display{unique_id}"}],
            "text": f"Text{unique_id}",
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "onsetDateTime": "1999-07-23",
        "note": [{"text": f"Note{unique_id}"}],
    }
    observation = hba1c(patient_id, unique_id, 123.456789)
    for body in (resource, observation):
        response = await patients.post(f"/patients/{patient_id}/facts", json=body, headers=org)
        assert response.status_code == 201, response.text

    engine = create_async_engine(patients_settings.database_url.get_secret_value())
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT row_to_json(f)::text AS dumped, resource_ct, fact_ct, "
                        "source_key_ct FROM clinical_facts f WHERE patient_id = :p"
                    ),
                    {"p": patient_id},
                )
            ).all()
    finally:
        await engine.dispose()
    assert len(rows) == 2
    dump = "\n".join(r.dumped for r in rows).encode()
    sealed = b"".join(
        bytes(r.resource_ct) + bytes(r.fact_ct) + bytes(r.source_key_ct) for r in rows
    )
    for plain in (
        code,
        "1999-07-23",
        "2026-01-15",
        "4548-4",
        "123.456789",
        f"Display{unique_id}",
        f"Text{unique_id}",
        f"Note{unique_id}",
        f"SrcId{unique_id}",
        f"lab-{unique_id}",
    ):
        assert plain.encode() not in dump, plain
        assert plain.encode() not in sealed, plain


async def test_a_blind_index_rotation_keeps_a_facts_dedup_once_reindexed(
    patients_settings: PatientsSettings,
    vault_root_token: str,
    issuer: TestTokenIssuer,
    org: dict[str, str],
    patient_body: Callable[..., dict[str, object]],
    unique_id: str,
) -> None:
    # A secret of this test's own, so rotating it reaches no other test.
    path = f"careloop/patients/blind-index-facts-{unique_id}"
    root = hvac.Client(url=patients_settings.vault_addr, token=vault_root_token)
    old_key, new_key = bytes(range(32)), bytes(range(100, 132))

    def store(secret: dict[str, str]) -> None:
        root.secrets.kv.v2.create_or_update_secret(path=path, secret=secret, mount_point="secret")

    store({"key": base64.b64encode(old_key).decode()})
    settings = patients_settings.model_copy(
        update={"blind_index_secret_path": path, "vault_token": SecretStr(vault_root_token)}
    )
    jwks = StaticJwksSource(issuer.jwks_document())
    async with running_app(create_app(settings, jwks=jwks)) as client:
        patient_id = await register(client, org, patient_body(unique_id))
        url = f"/patients/{patient_id}/facts"
        first = await client.post(url, json=hba1c(patient_id, unique_id, 7.2), headers=org)
        assert first.status_code == 201, first.text

    store(
        {
            "key": base64.b64encode(new_key).decode(),
            "version": "2",
            "previous_key": base64.b64encode(old_key).decode(),
            "previous_version": "1",
        }
    )
    report = await reindex(settings)
    assert (report.version, report.reindexed, report.left) == (2, 2, 0)
    # The old key retired: the new one alone still knows the fact and its content.
    store({"key": base64.b64encode(new_key).decode(), "version": "2"})
    async with running_app(create_app(settings, jwks=jwks)) as client:
        same = await client.post(url, json=hba1c(patient_id, unique_id, 7.2), headers=org)
        changed = await client.post(url, json=hba1c(patient_id, unique_id, 7.3), headers=org)
    assert (same.status_code, same.json()["id"]) == (200, first.json()["id"])
    assert same.json()["meta"]["versionId"] == "1"
    assert (changed.status_code, changed.json()["meta"]["versionId"]) == (200, "2")


async def test_break_glass_opens_the_facts_as_it_opens_the_record_audited_etreat(
    patients: httpx.AsyncClient,
    org: dict[str, str],
    mint: Mint,
    patient_body: Callable[..., dict[str, object]],
    unique_id: str,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    patient_id = await register(patients, org, patient_body(unique_id))
    url = f"/patients/{patient_id}/facts"
    created = await patients.post(url, json=hba1c(patient_id, unique_id, 8.1), headers=org)
    fact_id = created.json()["id"]
    doctor = f"doc-{unique_id}"
    grant = [{"pat": patient_id, "exp": int(time.time()) + 3600, "gid": f"g-{unique_id}"}]
    elsewhere = {"roles": ["provider"], "loc": ["loc-south"], "sub": doctor}

    without = await patients.get(f"{url}/{fact_id}", headers=mint(**elsewhere))
    with_grant = await patients.get(f"{url}/{fact_id}", headers=mint(**elsewhere, bg=grant))
    assert (without.status_code, with_grant.status_code) == (403, 200), with_grant.text

    def by_doctor(records: list[Any]) -> list[dict[str, Any]]:
        found = [json.loads(r.value) for r in records if header(r, "ce_type") == ACCESS]
        return sorted((a for a in found if a["actor_id"] == doctor), key=lambda a: a["occurred_at"])

    topic = f"{topic_prefix}careloop.patients"
    records = await wait_for_records(kafka_bootstrap, topic, lambda rs: len(by_doctor(rs)) >= 2)
    assert [
        (a["outcome"], a["purpose_of_use"], a["resource_type"]) for a in by_doctor(records)
    ] == [
        ("denied", "TREAT", "Observation"),
        ("success", "ETREAT", "Observation"),
    ]
