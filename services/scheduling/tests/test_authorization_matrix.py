"""The authorization matrix of the scheduling API, generated from the permission table.

Every role x every scheduling endpoint x every object situation (own location, another
location, another tenant, no second factor; for the patient role: its own record,
another patient's record, another tenant) gets an expected outcome computed from
`PERMISSION_TABLE` and the object rules, and the service must answer exactly that:
an unexpected allow fails the test. One app serves the whole module; every case
works in an organization of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from careloop_kit.auth import ROLES, StaticJwksSource, allowed, requires_mfa
from careloop_kit.auth.permissions import (
    OWN_RECORD_ROLES,
    PARTNER_SCOPES,
    SERVICE_GRANTS,
    service_categories,
    service_subject,
)
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import FrozenClock
from careloop_kit.testing.services import ServiceSettingsFactory
from careloop_scheduling.app import create_app
from careloop_scheduling.settings import SchedulingSettings

from .practice import MONDAY_NINE, NOW, Practice, set_up_practice

pytestmark = pytest.mark.service

OWN_LOCATION, OTHER_LOCATION = "loc-a", "loc-b"

# Each endpoint and the permission it needs (the table decides who holds it).
ENDPOINTS: dict[str, str] = {
    "book": "scheduling:book",
    "read": "scheduling:read",
    "list": "scheduling:read",
    "cancel": "scheduling:book",
    "reschedule": "scheduling:book",
    "confirm": "scheduling:book",
    "slots": "scheduling:read",
    "create_provider": "scheduling:manage",
    "add_availability": "scheduling:manage",
    "org_reminders_get": "scheduling:read",
    "org_reminders_put": "scheduling:manage",
    "type_reminders_get": "scheduling:read",
    "location_reminders_put": "scheduling:manage",
    "attendance": "scheduling:read",
    "waitlist_add": "scheduling:book",
    "waitlist_list": "scheduling:read",
    "waitlist_remove": "scheduling:book",
}
STAFF_SITUATIONS = (
    "own_location",
    "other_location",
    "other_tenant",
    "own_location_no_mfa",
    # The target's location is sensitive (behavioural health): its own staff (scope
    # naming it) see its records; staff of every location ("*") do not.
    "sensitive_own_location",
    "sensitive_every_location",
)
PATIENT_SITUATIONS = ("own_record", "other_record", "other_tenant", "sensitive_own_record")
SENSITIVE_SITUATIONS = frozenset(
    ("sensitive_own_location", "sensitive_every_location", "sensitive_own_record")
)
# Endpoints that reach the appointment or waitlist entry itself (not the catalog,
# settings or lists): refused to staff whose scope does not name the sensitive location.
SENSITIVE_RECORD_ENDPOINTS = frozenset(
    ("book", "read", "cancel", "reschedule", "confirm", "waitlist_add", "waitlist_remove")
)
CLIENT_SITUATIONS = ("own_location", "other_location", "other_tenant")

PARTNER_PREFIX, SERVICE_PREFIX = "partner:", "service:"
CLIENTS = [PARTNER_PREFIX + scope for scope in PARTNER_SCOPES] + [
    SERVICE_PREFIX + service for service in SERVICE_GRANTS
]

ALLOW = "allow"
_PATIENT_OUTCOME: dict[str, str | int] = {
    "own_record": ALLOW,
    "other_record": 403,
    "other_tenant": 404,
}
_STAFF_OUTCOME: dict[str, str | int] = {
    "own_location": ALLOW,
    "other_location": 403,
    "other_tenant": 404,
}


def holds(principal: str, permission: str) -> bool:
    if principal.startswith(PARTNER_PREFIX):
        return principal.removeprefix(PARTNER_PREFIX) == permission
    if principal.startswith(SERVICE_PREFIX):
        return service_categories(principal.removeprefix(SERVICE_PREFIX), permission) is not None
    return allowed(principal, permission)


def expected(role: str, endpoint: str, situation: str) -> str | int:
    """ALLOW or the refusal status, from the permission table and the object rules."""
    if not holds(role, ENDPOINTS[endpoint]):
        return 403
    if situation == "sensitive_own_location":
        return expected(role, endpoint, "own_location")
    if situation == "sensitive_own_record":
        return expected(role, endpoint, "own_record")
    if situation == "sensitive_every_location":
        # Every location in scope: the catalog, settings and lists are open (lists
        # leave the sensitive location's records out); its records are not.
        return 403 if endpoint in SENSITIVE_RECORD_ENDPOINTS else ALLOW
    if endpoint == "org_reminders_put":
        # Changes every location's reminders: needs every location in scope, which no
        # case of the matrix has (staff hold one location).
        return 403
    if situation == "own_location_no_mfa":
        return 403 if requires_mfa(role) else ALLOW
    if endpoint == "org_reminders_get":
        return ALLOW  # the caller's own organization's settings: no PHI
    if endpoint == "type_reminders_get":
        return 404 if situation == "other_tenant" else ALLOW
    if endpoint == "attendance":
        if role in OWN_RECORD_ROLES:
            # Its own history in the token's organization (empty elsewhere); never
            # another patient's.
            return 403 if situation == "other_record" else ALLOW
        # Staff need an appointment of the patient at one of their locations; in
        # another tenant the patient has none there, so that is refused too.
        return ALLOW if situation == "own_location" else 403
    if role in OWN_RECORD_ROLES:
        if endpoint in ("list", "waitlist_list"):
            # Always its own appointments; another patient id is refused.
            return 403 if situation == "other_record" else ALLOW
        if endpoint == "slots":
            # The catalog holds no PHI; another tenant's type is simply not found.
            return 404 if situation == "other_tenant" else ALLOW
        return _PATIENT_OUTCOME[situation]
    if endpoint in ("list", "waitlist_list"):
        return ALLOW  # filtered to the caller's locations, checked separately
    if endpoint == "slots":
        return 404 if situation == "other_tenant" else ALLOW
    if endpoint == "create_provider":
        # The provider lands in the caller's own org; only the location is checked.
        return 403 if situation == "other_location" else ALLOW
    # book, add_availability, the appointment and the waitlist entry endpoints.
    return _STAFF_OUTCOME[situation]


def waitlisting(practice: Practice, patient_id: str) -> dict[str, str]:
    """A waitlist entry for the practice's type and location, over March 2030."""
    return {
        "patient_id": patient_id,
        "location_id": practice.location_id,
        "appointment_type_id": practice.type_id,
        "earliest_date": "2030-03-04",
        "latest_date": "2030-03-29",
    }


def discloses_target(situation: str) -> bool:
    return situation in (
        "own_location",
        "own_location_no_mfa",
        "own_record",
        "sensitive_own_location",
        "sensitive_own_record",
    )


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

    def headers(self, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer.mint(**claims)}"}

    def admin(self, org_id: str, location: str = "*") -> dict[str, str]:
        return self.headers(
            org=org_id, sub="admin", roles=["org_admin"], loc=[location], amr=["pwd", "otp"]
        )


@pytest.fixture(scope="module")
async def matrix(
    service_settings: ServiceSettingsFactory,
) -> AsyncIterator[Matrix]:
    settings = await service_settings(SchedulingSettings, "scheduling")
    clock = FrozenClock(NOW)
    issuer = TestTokenIssuer(clock)
    app = create_app(settings, clock=clock, jwks=StaticJwksSource(issuer.jwks_document()))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as client,
    ):
        yield Matrix(app, client, issuer)


async def _call(
    client: httpx.AsyncClient,
    endpoint: str,
    practice: Practice,
    appointment_id: str,
    patient_id: str,
    location: str,
    headers: dict[str, str],
    entry_id: str | None = None,
) -> httpx.Response:
    later = (MONDAY_NINE + timedelta(minutes=30)).isoformat()
    if endpoint == "book":
        body = practice.booking(patient_id, MONDAY_NINE + timedelta(hours=1))
        return await client.post("/appointments", json=body, headers=headers)
    if endpoint == "read":
        return await client.get(f"/appointments/{appointment_id}", headers=headers)
    if endpoint == "list":
        return await client.get("/appointments", params={"patient_id": patient_id}, headers=headers)
    if endpoint in ("cancel", "confirm"):
        return await client.post(
            f"/appointments/{appointment_id}/{endpoint}",
            json={} if endpoint == "cancel" else None,
            headers=headers,
        )
    if endpoint == "reschedule":
        return await client.post(
            f"/appointments/{appointment_id}/reschedule", json={"start_at": later}, headers=headers
        )
    if endpoint == "slots":
        params = {
            "appointment_type_id": practice.type_id,
            "location_id": practice.location_id,
            "from": "2030-03-04T00:00:00Z",
            "to": "2030-03-05T00:00:00Z",
        }
        return await client.get("/slots", params=params, headers=headers)
    if endpoint == "create_provider":
        body = {"display_name": "Dr. New", "location_ids": [location]}
        return await client.post("/providers", json=body, headers=headers)
    if endpoint == "attendance":
        return await client.get(f"/patients/{patient_id}/attendance", headers=headers)
    if endpoint == "waitlist_add":
        body = waitlisting(practice, patient_id)
        return await client.post("/waitlist", json=body, headers=headers)
    if endpoint == "waitlist_list":
        return await client.get("/waitlist", params={"patient_id": patient_id}, headers=headers)
    if endpoint == "waitlist_remove":
        return await client.delete(f"/waitlist/{entry_id}", headers=headers)
    if endpoint == "org_reminders_get":
        return await client.get("/reminder-settings", headers=headers)
    if endpoint == "org_reminders_put":
        return await client.put("/reminder-settings", json={"send_time": "09:30"}, headers=headers)
    if endpoint == "type_reminders_get":
        return await client.get(
            f"/appointment-types/{practice.type_id}/reminder-settings", headers=headers
        )
    if endpoint == "location_reminders_put":
        return await client.put(
            f"/locations/{location}/reminder-settings", json={"send_time": "09:30"}, headers=headers
        )
    window = {"location_id": location, "weekday": 1, "start": "09:00", "end": "10:00"}
    return await client.post(
        f"/providers/{practice.provider_id}/availability", json=window, headers=headers
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_authorization_matrix(matrix: Matrix, case: Case) -> None:
    org_id = f"org-{uuid.uuid4().hex[:12]}"
    marker = uuid.uuid4().hex[:10]
    location = OTHER_LOCATION if case.situation == "other_location" else OWN_LOCATION
    target, someone_else = f"pat-{marker}", f"pat-{marker}-x"

    sensitive = case.situation in SENSITIVE_SITUATIONS
    # Only staff whose scope names a sensitive location may book there.
    admin = matrix.admin(org_id, location if sensitive else "*")
    practice = await set_up_practice(matrix.client, admin, location, sensitive=sensitive)
    booked = await matrix.client.post(
        "/appointments", json=practice.booking(target, MONDAY_NINE), headers=admin
    )
    assert booked.status_code == 201, booked.text
    appointment_id = booked.json()["id"]
    entry_id: str | None = None
    if case.endpoint in ("waitlist_list", "waitlist_remove"):
        listed = await matrix.client.post(
            "/waitlist", json=waitlisting(practice, target), headers=admin
        )
        assert listed.status_code == 201, listed.text
        entry_id = listed.json()["id"]

    claims: dict[str, Any] = {
        "org": org_id + "-elsewhere" if case.situation == "other_tenant" else org_id,
        "sub": f"{case.role}-{marker}",
        "sid": f"sid-{marker}",
        "roles": [case.role],
        "loc": ["*"] if case.situation == "sensitive_every_location" else [OWN_LOCATION],
        "amr": ["pwd"] if case.situation == "own_location_no_mfa" else ["pwd", "otp"],
    }
    patient_role = case.role in OWN_RECORD_ROLES
    if patient_role:
        claims.update(act="patient", loc=[], pat=someone_else)
        if case.situation != "other_record":
            claims["pat"] = target
    if case.role.startswith(PARTNER_PREFIX):
        claims.update(act="partner", roles=[], amr=[], scope=case.role.removeprefix(PARTNER_PREFIX))
    if case.role.startswith(SERVICE_PREFIX):
        service = case.role.removeprefix(SERVICE_PREFIX)
        claims.update(act="service", sub=service_subject(service), roles=[], loc=["*"], amr=[])
    headers = matrix.headers(**claims)

    response = await _call(
        matrix.client, case.endpoint, practice, appointment_id, target, location, headers, entry_id
    )

    outcome = expected(case.role, case.endpoint, case.situation)
    if outcome == ALLOW:
        assert response.status_code in (200, 201), (case, response.status_code, response.text)
        if case.endpoint == "list":
            ids = [a["id"] for a in response.json()["items"]]
            assert ids == ([appointment_id] if discloses_target(case.situation) else []), case
        if case.endpoint == "waitlist_list":
            ids = [e["id"] for e in response.json()["items"]]
            assert ids == ([entry_id] if discloses_target(case.situation) else []), case
        if case.endpoint == "waitlist_remove":
            assert response.json()["status"] == "removed", case
        if case.endpoint == "attendance":
            # The booked visit is still ahead: nothing past to count or list yet.
            assert response.json()["counts"]["total"] == 0, case
            assert response.json()["items"] == [], case
            assert response.json()["patient_id"] == target, case
        if case.endpoint in ("book", "create_provider", "waitlist_add"):
            assert response.json()["org_id"] == claims["org"], case
    else:
        assert response.status_code == outcome, (case, response.status_code, response.text)
        assert response.headers["content-type"] == "application/problem+json"


def test_the_matrix_covers_every_role_and_denies_something_for_each() -> None:
    roles = {c.role for c in CASES}
    assert roles == set(ROLES) | set(CLIENTS)
    for role in roles:
        outcomes = [expected(c.role, c.endpoint, c.situation) for c in CASES if c.role == role]
        assert any(o != ALLOW for o in outcomes), role


OPEN_PATHS = ("/healthz", "/readyz", "/metrics")


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    routes = []
    # FastAPI includes routers lazily: walk the effective routes, not `app.routes`.
    for route in iter_route_contexts(app.routes):
        path = route.path or ""
        # Probes and the Prometheus scrape are the kit's, open by design.
        if isinstance(route.original_route, APIRoute) and path not in OPEN_PATHS:
            for method in sorted(route.methods or ()):
                routes.append((method, path.replace("{", "").replace("}", "")))
    return routes


async def test_no_token_is_401_on_every_route(matrix: Matrix) -> None:
    routes = _routes(matrix.app)
    assert len(routes) == 28
    for method, path in routes:
        response = await matrix.client.request(method, path, json={})
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer", (method, path)
