from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from careloop_kit.testing.kafka import header, wait_for_records
from careloop_kit.testing.services import Mint
from careloop_patients.api.routes import router
from careloop_patients.settings import PatientsSettings

pytestmark = pytest.mark.service

ACCESS = "careloop.audit.access.recorded.v1"
new_patient: Callable[..., dict[str, object]]


@pytest.fixture(autouse=True)
def _bodies(patient_body: Callable[..., dict[str, object]]) -> None:
    global new_patient
    new_patient = patient_body


async def register(
    client: httpx.AsyncClient, org: dict[str, str], marker: str, **kw: object
) -> dict:
    response = await client.post("/patients", json=new_patient(marker, **kw), headers=org)
    assert response.status_code == 201, response.text
    return response.json()


async def test_register_then_read_returns_the_same_record(
    patients: httpx.AsyncClient, org: dict[str, str], unique_id: str
) -> None:
    created = await register(patients, org, unique_id)
    assert created["version"] == 1
    assert created["phones"] == ["(555) 201-3344"]

    read = await patients.get(f"/patients/{created['id']}", headers=org)

    assert read.status_code == 200
    assert read.json() == created


async def test_search_by_name_birth_date_phone_or_email_through_blind_indexes(
    patients: httpx.AsyncClient, org: dict[str, str], unique_id: str, mint: Mint
) -> None:
    created = await register(patients, org, unique_id)
    await register(patients, org, unique_id + "x", phones=["555 999 0000"])
    queries = [
        {
            "family": f"FAM{unique_id}".upper(),
            "given": f"giv{unique_id}",
            "birth_date": "1980-04-02",
        },
        {"phone": "+1 555-201-3344"},
        {"email": f"{unique_id.upper()}@EXAMPLE.org"},
    ]
    for params in queries:
        found = await patients.get("/patients", params=params, headers=org)
        assert found.status_code == 200, found.text
        assert [p["id"] for p in found.json()["items"]] == [created["id"]], params

    other_org = mint(org=f"org-{unique_id}-other")
    elsewhere = await patients.get("/patients", params=queries[1], headers=other_org)
    assert elsewhere.json()["items"] == []


async def test_another_tenant_cannot_read_the_record(
    patients: httpx.AsyncClient, org: dict[str, str], unique_id: str, mint: Mint
) -> None:
    created = await register(patients, org, unique_id)
    other_org = mint(org=f"org-{unique_id}-other")

    response = await patients.get(f"/patients/{created['id']}", headers=other_org)

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_update_bumps_version_and_refuses_stale_writes(
    patients: httpx.AsyncClient, org: dict[str, str], unique_id: str
) -> None:
    created = await register(patients, org, unique_id)
    url = f"/patients/{created['id']}"

    updated = await patients.patch(
        url, json={"version": 1, "emails": ["new@example.org"]}, headers=org
    )
    stale = await patients.patch(url, json={"version": 1, "phones": ["555 111 2222"]}, headers=org)

    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == 2
    assert updated.json()["emails"] == ["new@example.org"]
    assert stale.status_code == 409
    assert stale.json()["current_version"] == 2
    old_email = await patients.get(
        "/patients", params={"email": f"{unique_id}@example.org"}, headers=org
    )
    assert old_email.json()["items"] == []


async def test_invalid_requests_get_field_level_problems(
    patients: httpx.AsyncClient, org: dict[str, str], unique_id: str
) -> None:
    bad = new_patient(unique_id, birth_date="not-a-date", phones=["call me"], emails=["nope"])

    response = await patients.post("/patients", json=bad, headers=org)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    fields = {e["field"] for e in response.json()["errors"]}
    assert {"body.birth_date", "body.phones", "body.emails.0"} <= fields


async def test_future_birth_date_and_bad_search_are_problems_not_500s(
    patients: httpx.AsyncClient, org: dict[str, str], unique_id: str
) -> None:
    future = await patients.post(
        "/patients", json=new_patient(unique_id, birth_date="2999-01-01"), headers=org
    )
    half_name = await patients.get("/patients", params={"family": "x"}, headers=org)
    no_keys = await patients.get("/patients", headers=org)

    assert future.status_code == 422
    assert "future" in future.json()["detail"]
    assert half_name.status_code == 422
    assert no_keys.status_code == 422


async def test_requests_without_a_token_are_refused(patients: httpx.AsyncClient) -> None:
    response = await patients.get("/patients/abc")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in response.json()["detail"]
    # The temporary organization header no longer lets anyone in.
    legacy = await patients.get(
        "/patients/abc", headers={"X-Organization-Id": "org-1", "X-Actor-Id": "someone"}
    )
    assert legacy.status_code == 401


async def test_billing_sees_only_demographics_and_contact_and_the_audit_says_so(
    patients: httpx.AsyncClient,
    org: dict[str, str],
    mint: Mint,
    unique_id: str,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    created = await register(patients, org, unique_id)
    billing = mint(roles=["billing"], loc=["loc-north"], amr=["pwd"], sub=f"bill-{unique_id}")

    read = await patients.get(f"/patients/{created['id']}", headers=billing)
    found = await patients.get("/patients", params={"phone": "555 201 3344"}, headers=billing)

    assert read.status_code == 200, read.text
    body = read.json()
    assert body["name"] == created["name"]
    assert body["birth_date"] == created["birth_date"]
    assert body["phones"] == created["phones"]
    assert body["preferred_language"] is None
    assert body["preferences"] is None
    assert body["withheld_categories"] == ["preferences"]
    assert [p["preferred_language"] for p in found.json()["items"]] == [None]

    def complete(records: list) -> bool:
        return sum(header(r, "ce_type") == ACCESS for r in records) >= 3

    records = await wait_for_records(kafka_bootstrap, f"{topic_prefix}careloop.patients", complete)
    by_billing = [
        json.loads(r.value)
        for r in records
        if header(r, "ce_type") == ACCESS and json.loads(r.value)["actor_id"] == f"bill-{unique_id}"
    ]
    assert sorted(a["action"] for a in by_billing) == ["query", "read"]
    assert all(a["phi_categories"] == ["contact", "demographics"] for a in by_billing)


async def test_roles_that_read_clinical_data_need_a_one_time_code(
    patients: httpx.AsyncClient, org: dict[str, str], mint: Mint, unique_id: str
) -> None:
    created = await register(patients, org, unique_id)
    password_only = mint(roles=["provider"], loc=["loc-north"], amr=["pwd"])
    with_otp = mint(roles=["provider"], loc=["loc-north"], amr=["pwd", "otp"])

    refused = await patients.get(f"/patients/{created['id']}", headers=password_only)
    allowed = await patients.get(f"/patients/{created['id']}", headers=with_otp)

    assert refused.status_code == 403
    assert refused.json()["detail"].startswith("multi-factor authentication required")
    assert allowed.status_code == 200


def test_every_route_requires_a_permission() -> None:
    from careloop_kit.auth import required_permission

    found = {}
    for route in router.routes:
        calls = [d.call for d in route.dependant.dependencies]  # type: ignore[attr-defined]
        found[(sorted(route.methods)[0], route.path)] = [  # type: ignore[attr-defined]
            required_permission(c) for c in calls if required_permission(c)
        ]
    assert found == {
        ("POST", "/patients"): ["patients:create"],
        ("GET", "/patients/{patient_id}"): ["patients:read"],
        ("PATCH", "/patients/{patient_id}"): ["patients:update"],
        ("GET", "/patients"): ["patients:search"],
        ("POST", "/patients/_search"): ["patients:search"],
        ("POST", "/patients/{patient_id}/merge"): ["patients:merge"],
    }


async def test_merge_moves_contacts_and_retires_the_duplicate(
    patients: httpx.AsyncClient, org: dict[str, str], unique_id: str
) -> None:
    survivor = await register(patients, org, unique_id)
    duplicate = await register(patients, org, unique_id + "d", phones=["555 777 8888"])

    merged = await patients.post(
        f"/patients/{survivor['id']}/merge",
        json={"merged_patient_id": duplicate["id"], "version": 1},
        headers=org,
    )
    retired = await patients.get(f"/patients/{duplicate['id']}", headers=org)
    again = await patients.post(
        f"/patients/{survivor['id']}/merge",
        json={"merged_patient_id": duplicate["id"], "version": 2},
        headers=org,
    )

    assert merged.status_code == 200, merged.text
    assert "555 777 8888" in merged.json()["phones"]
    assert retired.json()["status"] == "merged"
    assert retired.json()["merged_into_id"] == survivor["id"]
    assert again.status_code == 409


async def test_every_request_is_audited_once_with_its_outcome_and_events_flow(
    patients: httpx.AsyncClient,
    patients_settings: PatientsSettings,
    org: dict[str, str],
    actor_id: str,
    unique_id: str,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    created = await register(patients, org, unique_id)
    await patients.get(f"/patients/{created['id']}", headers=org)
    await patients.get("/patients/no-such-patient", headers=org)
    await patients.get("/patients", params={"phone": "555 201 3344"}, headers=org)
    topic = f"{topic_prefix}careloop.patients"

    def complete(records: list) -> bool:
        return sum(header(r, "ce_type") == ACCESS for r in records) >= 4

    records = await wait_for_records(kafka_bootstrap, topic, complete)

    # Records of different patients sit on different partitions: order by time.
    accesses = sorted(
        (json.loads(r.value) for r in records if header(r, "ce_type") == ACCESS),
        key=lambda a: a["occurred_at"],
    )
    summary = [(a["action"], a["outcome"], a["patient_id"]) for a in accesses]
    assert summary == [
        ("create", "success", created["id"]),
        ("read", "success", created["id"]),
        ("read", "error", "no-such-patient"),
        ("query", "success", created["id"]),
    ]
    # The actor of every record is the token's `sub`, its type the token's `act`.
    assert {a["actor_id"] for a in accesses} == {actor_id}
    assert {a["actor_type"] for a in accesses} == {"user"}
    assert accesses[3]["query_fingerprint"] == "phone"
    registered = [
        r for r in records if header(r, "ce_type") == "careloop.patients.patient.registered.v1"
    ]
    assert len(registered) == 1
    assert registered[0].key.decode() == created["id"]
    assert json.loads(registered[0].value)["patient_id"] == created["id"]
    assert header(registered[0], "ce_source") == "/careloop/patients"
    assert header(registered[0], "traceparent") is not None


async def test_a_refused_permission_is_in_the_audit_trail_too(
    patients: httpx.AsyncClient,
    org: dict[str, str],
    mint: Mint,
    unique_id: str,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    created = await register(patients, org, unique_id)
    billing = mint(roles=["billing"], loc=["*"], amr=["pwd"], sub=f"bill-{unique_id}")
    provider = mint(roles=["provider"], loc=["*"], amr=["pwd"], sub=f"prov-{unique_id}")

    merge = await patients.post(
        f"/patients/{created['id']}/merge",
        json={"merged_patient_id": "someone-else", "version": 1},
        headers=billing,
    )
    no_mfa = await patients.get(f"/patients/{created['id']}", headers=provider)

    assert (merge.status_code, no_mfa.status_code) == (403, 403)

    def refusals(records: list) -> list[dict]:
        return [
            json.loads(r.value)
            for r in records
            if header(r, "ce_type") == ACCESS and json.loads(r.value)["outcome"] == "denied"
        ]

    records = await wait_for_records(
        kafka_bootstrap, f"{topic_prefix}careloop.patients", lambda rs: len(refusals(rs)) >= 2
    )
    denied = sorted(refusals(records), key=lambda a: a["actor_id"])
    assert [(a["actor_id"], a["action"], a["patient_id"]) for a in denied] == [
        (f"bill-{unique_id}", "merge", created["id"]),
        (f"prov-{unique_id}", "read", created["id"]),
    ]
    assert all(a["phi_categories"] == [] for a in denied)
    assert all(a["outcome_detail"].startswith("403") for a in denied)
