"""Property-based fuzzing of the public API through the gateway, from its merged OpenAPI.

Schemathesis generates requests (valid and invalid) for every operation of patients and
audit in `/api/v1/openapi.json`, sends them through the gateway to the real services, and
checks each answer: never a 5xx, a documented status answers with its documented content
type and body schema. The services document 200/201/422 only (401/403/404/409 are
undocumented problem+json answers), so conformance of the status code itself is not
checked. Each operation runs twice: as an org-wide administrator and as front desk staff
limited to one location; half the cases that name a patient name a real one.

Hypothesis runs derandomized, but schemathesis draws some values with its own randomness,
so a rare input may come up in one run only; every failure prints a `curl` line that
reproduces it. `CARELOOP_FUZZ_EXAMPLES=200` runs a deeper search (about 2 minutes).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from careloop_kit.auth.testing import TestTokenIssuer

pytestmark = [
    pytest.mark.e2e,
    # Raised from inside schemathesis' own strategies, not from this module.
    pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies"),
]

MAX_EXAMPLES = int(os.environ.get("CARELOOP_FUZZ_EXAMPLES", "25"))
"""Examples per operation and role; raise it for a deeper local run."""
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
ORG = "org-fuzz"
HOME = "loc-north"
AWAY = "loc-south"

OPERATIONS = [
    "POST /api/v1/patients/patients",
    "GET /api/v1/patients/patients",
    "POST /api/v1/patients/patients/_search",
    "GET /api/v1/patients/patients/{patient_id}",
    "PATCH /api/v1/patients/patients/{patient_id}",
    "POST /api/v1/patients/patients/{patient_id}/merge",
    "POST /api/v1/patients/patients/{patient_id}/facts",
    "GET /api/v1/patients/patients/{patient_id}/facts",
    "GET /api/v1/patients/patients/{patient_id}/facts/{fact_id}",
    "POST /api/v1/patients/patients/{patient_id}/facts/{fact_id}/entered-in-error",
    "GET /api/v1/audit/audit/patients/{patient_id}/trail",
    "GET /api/v1/audit/audit/events",
    "GET /api/v1/audit/audit/events/{audit_id}/fhir",
    "POST /api/v1/audit/audit/verify",
]
"""Every public operation of patients and audit (checked against the document below)."""


def _bearer(issuer: TestTokenIssuer, subject: str, roles: list[str], loc: list[str]) -> str:
    token = issuer.mint(
        org=ORG,
        sub=subject,
        roles=roles,
        loc=loc,
        amr=["pwd", "otp"],
        exp=int(time.time()) + 3600,
    )
    return f"Bearer {token}"


ROLES: dict[str, Callable[[TestTokenIssuer], str]] = {
    "org_admin": lambda issuer: _bearer(issuer, "fuzz-admin", ["org_admin"], ["*"]),
    "front_desk": lambda issuer: _bearer(issuer, "fuzz-desk", ["front_desk"], [HOME]),
}


@pytest.fixture(scope="module")
async def schema(gateway_url: str) -> Any:
    """The gateway's merged OpenAPI document, loaded by schemathesis."""
    loaded = await asyncio.to_thread(
        schemathesis.openapi.from_url, f"{gateway_url}/api/v1/openapi.json"
    )
    assert not loaded.raw_schema.get("x-careloop-unavailable"), loaded.raw_schema
    return loaded


@pytest.fixture(scope="module")
async def seeded(gateway_url: str, token_issuer: TestTokenIssuer) -> list[str]:
    """Ids of two real patients (one per location), so that some cases hit existing rows."""
    headers = {"Authorization": ROLES["org_admin"](token_issuer)}
    ids = []
    async with httpx_client(gateway_url) as client:
        for n, location in enumerate([HOME, AWAY]):
            body = {
                "location_id": location,
                "name": {"family": f"Fuzz{n}", "given": ["Seed"]},
                "birth_date": "1980-04-02",
                "sex": "female",
                "phones": ["(555) 201-3344"],
                "emails": [f"seed{n}@example.org"],
            }
            response = await client.post("/api/v1/patients/patients", json=body, headers=headers)
            assert response.status_code == 201, response.text
            ids.append(str(response.json()["id"]))
    return ids


def httpx_client(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=30)


def _operation_labels(schema: Any) -> list[str]:
    labels = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith(("/api/v1/patients/", "/api/v1/audit/")) and not (
            operation.path.endswith(("/healthz", "/readyz"))
        ):
            labels.append(f"{operation.method.upper()} {operation.path}")
    return labels


async def test_every_operation_of_patients_and_audit_is_fuzzed(schema: Any) -> None:
    assert sorted(_operation_labels(schema)) == sorted(OPERATIONS)


def _with_seeded_id(strategy: Any, seeds: list[str]) -> Any:
    """Half of the cases address a real patient instead of a random id."""

    def seed(pair: tuple[Case[Any], str]) -> Case[Any]:
        case, patient_id = pair
        case.path_parameters = {**(case.path_parameters or {}), "patient_id": patient_id}
        return case

    return st.one_of(strategy, st.tuples(strategy, st.sampled_from(seeds)).map(seed))


def _fuzz(operation: Any, base_url: str, authorization: str, seeds: list[str]) -> dict[int, int]:
    """Run the property-based test of one operation; answer counts of statuses seen."""
    modes = [GenerationMode.POSITIVE]
    if operation.path_parameters or operation.query or operation.body:
        modes.append(GenerationMode.NEGATIVE)
    strategy = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in modes))
    if "{patient_id}" in operation.path:
        strategy = _with_seeded_id(strategy, seeds)
    session = requests.Session()
    session.trust_env = False
    statuses: dict[int, int] = {}

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    @given(case=strategy)
    def property_holds(case: Case[Any]) -> None:
        headers = {"Authorization": authorization}
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    try:
        property_holds()
    finally:
        session.close()
    return statuses


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize("label", OPERATIONS)
async def test_no_server_error_and_no_schema_violation(
    schema: Any,
    gateway_url: str,
    token_issuer: TestTokenIssuer,
    seeded: list[str],
    role: str,
    label: str,
) -> None:
    method, path = label.split(" ", 1)
    operation = schema[path][method]
    began = time.monotonic()
    statuses = await asyncio.to_thread(
        _fuzz, operation, gateway_url, ROLES[role](token_issuer), seeded
    )
    seen = dict(sorted(statuses.items()))
    took = time.monotonic() - began
    print(f"{role} {label}: {sum(seen.values())} requests, statuses {seen} in {took:.1f}s")


@pytest.mark.parametrize(
    "path", ["/api/v1/audit/audit/events", "/api/v1/audit/audit/patients/{patient_id}/trail"]
)
async def test_an_audit_cursor_beyond_int64_is_a_validation_problem(
    gateway_url: str, token_issuer: TestTokenIssuer, seeded: list[str], path: str
) -> None:
    """The smallest input of a 500 the fuzzer found (fixed): it must be a 422."""
    headers = {"Authorization": ROLES["org_admin"](token_issuer)}
    async with httpx_client(gateway_url) as client:
        response = await client.get(
            path.format(patient_id=seeded[0]), params={"cursor": 2**63}, headers=headers
        )
    assert response.status_code == 422, response.text


async def test_a_refused_call_with_a_malformed_id_is_still_a_403(
    gateway_url: str, token_issuer: TestTokenIssuer
) -> None:
    """A 500 the fuzzer found (fixed): auditing the refusal must not trip over the id."""
    headers = {"Authorization": ROLES["front_desk"](token_issuer)}
    async with httpx_client(gateway_url) as client:
        response = await client.get(
            f"/api/v1/audit/audit/patients/{'P' * 300}/trail", headers=headers
        )
    assert response.status_code == 403, response.text
