"""The authorization matrix, generated from the permission table.

Every role x every patients endpoint x every object situation (own location, another
location, another tenant, no second factor; for the patient role: its own record,
another patient's record, another tenant) gets an expected outcome computed from
`PERMISSION_TABLE` and the object rules, and the service must answer exactly that:
an unexpected allow fails the test. One app serves the whole module; every case
works in an organization of its own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

import careloop_patients
from careloop_kit.auth import ROLES, StaticJwksSource, allowed, requires_mfa
from careloop_kit.auth.permissions import (
    OWN_RECORD_ROLES,
    PARTNER_SCOPES,
    SERVICE_GRANTS,
    partner_categories,
    phi_categories,
    service_categories,
    service_subject,
)
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import SystemClock
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.infra.postgres import PostgresServer
from careloop_kit.service import Runtime
from careloop_patients.app import create_app
from careloop_patients.domain.patient import ALL_CATEGORIES
from careloop_patients.settings import PatientsSettings

pytestmark = pytest.mark.service

MIGRATIONS = Path(careloop_patients.__file__).parent / "migrations"
OWN_LOCATION, OTHER_LOCATION = "loc-a", "loc-b"

# Each endpoint and the permission it needs (the table decides who holds it).
ENDPOINTS: dict[str, str] = {
    "create": "patients:create",
    "read": "patients:read",
    "update": "patients:update",
    "search": "patients:search",
    "merge": "patients:merge",
}
STAFF_SITUATIONS = ("own_location", "other_location", "other_tenant", "own_location_no_mfa")
PATIENT_SITUATIONS = ("own_record", "other_record", "other_tenant")
CLIENT_SITUATIONS = ("own_location", "other_location", "other_tenant")

# Principals that hold no roles: a partner client holding one partner scope (its
# locations: the own one), and each service identity (every location of the tenant).
PARTNER_PREFIX, SERVICE_PREFIX = "partner:", "service:"
CLIENTS = [PARTNER_PREFIX + scope for scope in PARTNER_SCOPES] + [
    SERVICE_PREFIX + service for service in SERVICE_GRANTS
]

ALLOW = "allow"


def holds(principal: str, permission: str) -> bool:
    """Whether a role, partner scope or service grant includes `permission`."""
    if principal.startswith(PARTNER_PREFIX):
        return principal.removeprefix(PARTNER_PREFIX) == permission
    if principal.startswith(SERVICE_PREFIX):
        return service_categories(principal.removeprefix(SERVICE_PREFIX), permission) is not None
    return allowed(principal, permission)


def shown(principal: str, permission: str) -> frozenset[str]:
    """The PHI categories the principal may see through `permission`."""
    if principal.startswith(PARTNER_PREFIX):
        scope = principal.removeprefix(PARTNER_PREFIX)
        return partner_categories(frozenset({scope}), permission)
    if principal.startswith(SERVICE_PREFIX):
        service = principal.removeprefix(SERVICE_PREFIX)
        return service_categories(service, permission) or frozenset()
    return phi_categories(principal, permission)


def expected(role: str, endpoint: str, situation: str) -> str | int:
    """ALLOW or the refusal status, from the permission table and the object rules."""
    if not holds(role, ENDPOINTS[endpoint]):
        return 403
    if role.startswith(SERVICE_PREFIX):
        # Every location of the tenant; never another tenant.
        return (
            404 if situation == "other_tenant" and endpoint not in ("search", "create") else ALLOW
        )
    if situation == "own_location_no_mfa":
        return 403 if requires_mfa(role) else ALLOW
    if role in OWN_RECORD_ROLES:
        # Only ever its own record; another tenant's record is not found.
        return {"own_record": ALLOW, "other_record": 403, "other_tenant": 404}[situation]
    if endpoint == "search":
        # Searching is allowed; what it may disclose is checked separately.
        return ALLOW
    if endpoint == "create":
        # The body names a location, never a tenant: it lands in the caller's own org.
        return 403 if situation == "other_location" else ALLOW
    return {"own_location": ALLOW, "other_location": 403, "other_tenant": 404}[situation]


def discloses_target(situation: str) -> bool:
    """Whether an allowed search may return the target patient."""
    return situation in ("own_location", "own_location_no_mfa")


@dataclass(frozen=True)
class Case:
    role: str
    endpoint: str
    situation: str

    @property
    def id(self) -> str:
        return f"{self.role}-{self.endpoint}-{self.situation}"


CASES = [
    Case(role, endpoint, situation)
    for role in ROLES
    for endpoint in ENDPOINTS
    for situation in (PATIENT_SITUATIONS if role in OWN_RECORD_ROLES else STAFF_SITUATIONS)
] + [
    Case(client, endpoint, situation)
    for client in CLIENTS
    for endpoint in ENDPOINTS
    for situation in CLIENT_SITUATIONS
]


@dataclass
class Matrix:
    app: FastAPI
    client: httpx.AsyncClient
    issuer: TestTokenIssuer

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def headers(self, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer.mint(**claims)}"}

    def admin(self, org_id: str) -> dict[str, str]:
        return self.headers(
            org=org_id, sub="admin", roles=["org_admin"], loc=["*"], amr=["pwd", "otp"]
        )

    async def register(self, org_id: str, location_id: str, marker: str) -> str:
        response = await self.client.post(
            "/patients", json=body(marker, location_id), headers=self.admin(org_id)
        )
        assert response.status_code == 201, response.text
        patient_id: str = response.json()["id"]
        return patient_id


def body(marker: str, location_id: str) -> dict[str, Any]:
    return {
        "location_id": location_id,
        "name": {"family": f"Fam{marker}", "given": [f"Giv{marker}"]},
        "birth_date": "1975-06-15",
        "emails": [f"{marker}@example.org"],
    }


@pytest.fixture(scope="module")
async def matrix(
    postgres_server: PostgresServer,
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
) -> AsyncIterator[Matrix]:
    unique = uuid.uuid4().hex[:10]
    name, password = f"patients_matrix_{unique}", uuid.uuid4().hex
    await postgres_server.create_database(name, owner=name, password=password)
    dsn = postgres_server.dsn_for(name, name, password)
    await upgrade_async(MIGRATIONS, dsn)
    settings = PatientsSettings(
        environment="test",
        database_url=dsn,
        kafka_bootstrap=kafka_bootstrap,
        vault_addr=vault_addr,
        vault_token=vault_tokens["patients"],
        topic_prefix=f"t{unique}.",
        log_json=False,
    )
    issuer = TestTokenIssuer(SystemClock())
    app = create_app(settings, jwks=StaticJwksSource(issuer.jwks_document()))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p") as client,
    ):
        yield Matrix(app, client, issuer)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_authorization_matrix(matrix: Matrix, case: Case) -> None:
    org_id = f"org-{uuid.uuid4().hex[:12]}"
    marker = uuid.uuid4().hex[:10]
    patient_role = case.role in OWN_RECORD_ROLES
    location = OTHER_LOCATION if case.situation == "other_location" else OWN_LOCATION

    target = await matrix.register(org_id, location, marker)
    duplicate = await matrix.register(org_id, location, marker + "d")
    claims: dict[str, Any] = {
        "org": org_id + "-elsewhere" if case.situation == "other_tenant" else org_id,
        "sub": f"{case.role}-{marker}",
        "sid": f"sid-{marker}",
        "roles": [case.role],
        "loc": [OWN_LOCATION],
        "amr": ["pwd"] if case.situation == "own_location_no_mfa" else ["pwd", "otp"],
    }
    if patient_role:
        claims.update(act="patient", loc=[], pat=duplicate)
        if case.situation != "other_record":
            claims["pat"] = target
    if case.role.startswith(PARTNER_PREFIX):
        claims.update(act="partner", roles=[], amr=[], scope=case.role.removeprefix(PARTNER_PREFIX))
    if case.role.startswith(SERVICE_PREFIX):
        service = case.role.removeprefix(SERVICE_PREFIX)
        claims.update(act="service", sub=service_subject(service), roles=[], loc=["*"], amr=[])
    headers = matrix.headers(**claims)

    client = matrix.client
    if case.endpoint == "create":
        response = await client.post(
            "/patients", json=body(marker + "n", location), headers=headers
        )
    elif case.endpoint == "read":
        response = await client.get(f"/patients/{target}", headers=headers)
    elif case.endpoint == "update":
        response = await client.patch(
            f"/patients/{target}",
            json={"version": 1, "emails": [f"{marker}u@example.org"]},
            headers=headers,
        )
    elif case.endpoint == "search":
        response = await client.get(
            "/patients", params={"email": f"{marker}@example.org"}, headers=headers
        )
    else:
        response = await client.post(
            f"/patients/{target}/merge",
            json={"merged_patient_id": duplicate, "version": 1},
            headers=headers,
        )

    outcome = expected(case.role, case.endpoint, case.situation)
    if outcome == ALLOW:
        assert response.status_code in (200, 201), (case, response.status_code, response.text)
        if case.endpoint == "search":
            ids = [p["id"] for p in response.json()["items"]]
            assert ids == ([target] if discloses_target(case.situation) else []), case
        if case.endpoint == "create":
            assert response.json()["org_id"] == claims["org"], case
        if case.endpoint == "read":
            # Minimum necessary: exactly the categories the table grants are shown.
            visible = shown(case.role, ENDPOINTS[case.endpoint])
            withheld = [c for c in ALL_CATEGORIES if c not in visible]
            assert response.json()["withheld_categories"] == withheld, case
    else:
        assert response.status_code == outcome, (case, response.status_code, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        mfa_case = case.situation == "own_location_no_mfa"
        if mfa_case and allowed(case.role, ENDPOINTS[case.endpoint]):
            assert response.json()["detail"].startswith("multi-factor authentication required")


def test_the_matrix_covers_every_role_and_denies_something_for_each() -> None:
    roles = {c.role for c in CASES}
    assert roles == set(ROLES) | set(CLIENTS)
    for role in roles:
        outcomes = [expected(c.role, c.endpoint, c.situation) for c in CASES if c.role == role]
        assert any(o != ALLOW for o in outcomes), role


def _patient_routes(app: FastAPI) -> list[tuple[str, str]]:
    routes = []
    # FastAPI includes routers lazily: walk the effective routes, not `app.routes`.
    for route in iter_route_contexts(app.routes):
        path = route.path or ""
        if isinstance(route.original_route, APIRoute) and path.startswith("/patients"):
            for method in sorted(route.methods or ()):
                routes.append((method, path.replace("{patient_id}", "p-1")))
    return routes


async def _call(client: httpx.AsyncClient, method: str, path: str, **kw: Any) -> httpx.Response:
    json_body = {"version": 1} if method in ("POST", "PATCH") else None
    return await client.request(method, path, json=json_body, **kw)


async def test_no_token_is_401_with_www_authenticate_on_every_route(matrix: Matrix) -> None:
    routes = _patient_routes(matrix.app)
    assert len(routes) == 6
    for method, path in routes:
        response = await _call(matrix.client, method, path)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer", (method, path)
        forged = await _call(
            matrix.client, method, path, headers={"Authorization": "Bearer not.a.token"}
        )
        assert forged.status_code == 401, (method, path)
        assert forged.headers["www-authenticate"].startswith("Bearer error="), (method, path)


async def test_an_expired_token_is_401_everywhere(matrix: Matrix) -> None:
    now = int(time.time())
    headers = matrix.headers(
        roles=["org_admin"],
        loc=["*"],
        amr=["pwd", "otp"],
        iat=now - 900,
        nbf=now - 900,
        exp=now - 600,
    )
    for method, path in _patient_routes(matrix.app):
        response = await _call(matrix.client, method, path, headers=headers)
        assert response.status_code == 401, (method, path)
        assert "expired" in response.json()["detail"]


async def test_a_revoked_session_is_401_everywhere(matrix: Matrix) -> None:
    org_id = f"org-{uuid.uuid4().hex[:12]}"
    sid = f"sid-{uuid.uuid4().hex[:12]}"
    headers = matrix.headers(
        org=org_id, sid=sid, roles=["org_admin"], loc=["*"], amr=["pwd", "otp"]
    )
    target = await matrix.register(org_id, OWN_LOCATION, uuid.uuid4().hex[:10])
    assert (await matrix.client.get(f"/patients/{target}", headers=headers)).status_code == 200

    matrix.runtime.state["revoked_sessions"].revoke(sid)

    for method, path in _patient_routes(matrix.app):
        response = await _call(matrix.client, method, path, headers=headers)
        assert response.status_code == 401, (method, path)
    again = await matrix.client.get(f"/patients/{target}", headers=headers)
    assert again.status_code == 401
