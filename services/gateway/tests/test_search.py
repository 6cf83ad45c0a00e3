"""Patient search through the gateway: the POST with a body is forwarded, never kept as an
idempotent answer, and neither the gateway's log nor the patients service's log holds
the searched phone number, whichever form the client uses."""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from careloop_kit.telemetry import log_handler

from .conftest import GatewayFactory, new_patient

pytestmark = pytest.mark.service

PATIENTS = "/api/v1/patients/patients"


@pytest.fixture
def gateway_log() -> Iterator[io.StringIO]:
    """Every line the in-process gateway logs, formatted as in production."""
    lines = io.StringIO()
    handler = log_handler("gateway", json_logs=True, stream=lines)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lines
    finally:
        root.removeHandler(handler)


def _patients_log_lines(base: Path) -> list[str]:
    """The log of the patients process (`patients_url` writes it under the session's tmp)."""
    paths = sorted(base.glob("patients-logs*/patients.log"))
    assert paths, "the patients process logs to a file"
    return [line for path in paths for line in path.read_text(errors="replace").splitlines()]


def _digits() -> str:
    return f"555{random.randint(1000000, 9999999)}"


async def test_a_search_by_body_is_forwarded_and_found(
    make_gateway: GatewayFactory, patients_url: str, org: dict[str, str], unique_id: str
) -> None:
    phone = _digits()
    async with make_gateway(routes={"patients": patients_url}) as gateway:
        created = await gateway.post(
            PATIENTS, json=new_patient(unique_id, phones=[phone]), headers=org
        )
        assert created.status_code == 201, created.text
        found = await gateway.post(f"{PATIENTS}/_search", json={"phone": phone}, headers=org)
        missing = await gateway.post(
            f"{PATIENTS}/_search", json={"email": f"none-{unique_id}@example.org"}, headers=org
        )
        refused = await gateway.post(f"{PATIENTS}/_search", json={"ssn": "x"}, headers=org)

    assert found.status_code == 200, found.text
    assert [p["id"] for p in found.json()["items"]] == [created.json()["id"]]
    assert missing.json() == {"items": [], "count": 0}
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"


async def test_a_search_by_body_is_never_replayed_from_an_idempotency_record(
    make_gateway: GatewayFactory, patients_url: str, org: dict[str, str], unique_id: str
) -> None:
    phone = _digits()
    search = {"phone": phone}
    key = {"Idempotency-Key": f"search-{unique_id}"}
    async with make_gateway(routes={"patients": patients_url}) as gateway:
        before = await gateway.post(f"{PATIENTS}/_search", json=search, headers={**org, **key})
        created = await gateway.post(
            PATIENTS, json=new_patient(unique_id, phones=[phone]), headers=org
        )
        after = await gateway.post(f"{PATIENTS}/_search", json=search, headers={**org, **key})

    assert created.status_code == 201, created.text
    assert before.json()["count"] == 0
    # Forwarded again (the new patient is found), not answered from a stored record.
    assert "idempotent-replayed" not in after.headers
    assert [p["id"] for p in after.json()["items"]] == [created.json()["id"]]


async def test_no_log_line_of_the_gateway_or_the_service_holds_the_searched_phone(
    make_gateway: GatewayFactory,
    patients_url: str,
    org: dict[str, str],
    unique_id: str,
    gateway_log: io.StringIO,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    phone = _digits()
    async with make_gateway(routes={"patients": patients_url}) as gateway:
        created = await gateway.post(
            PATIENTS, json=new_patient(unique_id, phones=[phone]), headers=org
        )
        by_query = await gateway.get(PATIENTS, params={"phone": phone}, headers=org)
        by_body = await gateway.post(f"{PATIENTS}/_search", json={"phone": phone}, headers=org)
        # The second wall alone: with httpx's request lines let through, the line is
        # logged and its query is not.
        httpx_logger = logging.getLogger("httpx")
        capped = httpx_logger.level
        httpx_logger.setLevel(logging.INFO)
        try:
            second = await gateway.get(PATIENTS, params={"phone": phone}, headers=org)
        finally:
            httpx_logger.setLevel(capped)

    assert created.status_code == 201, created.text
    assert by_query.json()["count"] == by_body.json()["count"] == second.json()["count"] == 1
    assert capped >= logging.WARNING
    gateway_lines = gateway_log.getvalue().splitlines()
    upstream_lines = [line for line in gateway_lines if f"GET {patients_url}/" in line]
    assert len(upstream_lines) == 1, gateway_lines
    assert f"GET {patients_url}/patients?[redacted]" in upstream_lines[0]
    lines = gateway_lines + _patients_log_lines(tmp_path_factory.getbasetemp())
    leaking = [line for line in lines if phone in line or phone[3:] in line]
    assert leaking == []
