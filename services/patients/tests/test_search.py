"""`POST /patients/_search`: the search with its keys in the body (as FHIR does), so PHI
stays out of URLs. Same results, same audit and same permission as the GET."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import httpx
import pytest

from careloop_kit.testing.kafka import header, wait_for_records
from careloop_kit.testing.services import Mint

pytestmark = pytest.mark.service

ACCESS = "careloop.audit.access.recorded.v1"
SEARCH = "/patients/_search"


async def _register(
    client: httpx.AsyncClient,
    org: dict[str, str],
    body: dict[str, object],
) -> str:
    response = await client.post("/patients", json=body, headers=org)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_the_body_finds_what_the_query_finds_by_each_key(
    patients: httpx.AsyncClient,
    org: dict[str, str],
    unique_id: str,
    patient_body: Callable[..., dict[str, object]],
) -> None:
    created = await _register(patients, org, patient_body(unique_id))
    await _register(patients, org, patient_body(unique_id + "x", phones=["555 999 0000"]))
    searches: list[dict[str, object]] = [
        {"family": f"FAM{unique_id}", "given": f"giv{unique_id}", "birth_date": "1980-04-02"},
        {"phone": "+1 555-201-3344", "limit": 5},
        {"email": f"{unique_id.upper()}@EXAMPLE.org"},
    ]
    for search in searches:
        by_body = await patients.post(SEARCH, json=search, headers=org)
        by_query = await patients.get("/patients", params=search, headers=org)

        assert by_body.status_code == 200, by_body.text
        assert [p["id"] for p in by_body.json()["items"]] == [created], search
        assert by_body.json() == by_query.json()


async def test_nothing_found_is_an_empty_page(
    patients: httpx.AsyncClient, org: dict[str, str], unique_id: str
) -> None:
    response = await patients.post(
        SEARCH, json={"email": f"nobody-{unique_id}@example.org"}, headers=org
    )

    assert response.status_code == 200
    assert response.json() == {"items": [], "count": 0}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ssn": "123-45-6789"}, "body.ssn"),
        ({"phone": "5550100", "limit": 0}, "body.limit"),
        ({"birth_date": "yesterday"}, "body.birth_date"),
        ([{"phone": "5550100"}], "body"),
    ],
)
async def test_a_bad_body_is_a_422_problem_naming_the_field(
    patients: httpx.AsyncClient, org: dict[str, str], body: object, field: str
) -> None:
    response = await patients.post(SEARCH, json=body, headers=org)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert field in {e["field"] for e in response.json()["errors"]}


@pytest.mark.parametrize(
    "body",
    [{}, {"family": "Only"}, {"family": "Fam", "given": "Giv"}],
)
async def test_a_search_without_a_whole_key_is_a_422_problem(
    patients: httpx.AsyncClient, org: dict[str, str], body: dict[str, object]
) -> None:
    response = await patients.post(SEARCH, json=body, headers=org)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/invalid-patient")


async def test_a_role_without_the_search_permission_and_a_patient_account_get_403(
    patients: httpx.AsyncClient, mint: Mint, unique_id: str
) -> None:
    auditor = mint(roles=["auditor"], amr=["pwd"], sub=f"aud-{unique_id}")
    patient = mint(roles=["patient"], act="patient", loc=[], pat="p-1", sub=f"pat-{unique_id}")

    for headers in (auditor, patient):
        response = await patients.post(SEARCH, json={"phone": "5550100"}, headers=headers)

        assert response.status_code == 403, response.text
        assert response.headers["content-type"] == "application/problem+json"


async def test_the_body_search_is_audited_as_the_query_is_naming_each_patient_disclosed(
    patients: httpx.AsyncClient,
    org: dict[str, str],
    actor_id: str,
    unique_id: str,
    patient_body: Callable[..., dict[str, object]],
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    digits = f"555{random.randint(1_000_000, 9_999_999)}"
    phone = f"{digits[:3]} {digits[3:6]} {digits[6:]}"
    first = await _register(patients, org, patient_body(unique_id, phones=[phone]))
    second = await _register(patients, org, patient_body(unique_id + "b", phones=[phone]))

    by_body = await patients.post(SEARCH, json={"phone": phone}, headers=org)
    by_query = await patients.get("/patients", params={"phone": phone}, headers=org)

    assert by_body.json()["count"] == by_query.json()["count"] == 2

    def queries(records: list) -> list[dict]:
        return [
            json.loads(r.value)
            for r in records
            if header(r, "ce_type") == ACCESS and json.loads(r.value)["action"] == "query"
        ]

    def named(accesses: list[dict]) -> list[str]:
        return sorted(
            name for a in accesses for name in [a["patient_id"], *a.get("extra_patient_ids", [])]
        )

    # Each search names both patients it disclosed, so each one's trail shows it.
    both_twice = sorted([first, first, second, second])
    records = await wait_for_records(
        kafka_bootstrap,
        f"{topic_prefix}careloop.patients",
        lambda rs: named(queries(rs)) == both_twice,
    )
    audited = queries(records)
    kept = ("action", "outcome", "actor_id", "query_fingerprint", "phi_categories")
    assert {json.dumps({k: a[k] for k in kept}) for a in audited} == {
        json.dumps(
            {
                "action": "query",
                "outcome": "success",
                "actor_id": actor_id,
                "query_fingerprint": "phone",
                "phi_categories": audited[0]["phi_categories"],
            }
        )
    }
    assert audited[0]["phi_categories"]
    # The audit names which keys were used, never their values.
    assert digits not in json.dumps(audited)
