"""The authorization matrix, generated from the permission table.

Every role x every patients endpoint x every object situation (own location, another
location, another tenant, no second factor; for the patient role: its own record,
another patient's record, another tenant) gets an expected outcome computed from
`PERMISSION_TABLE` and the object rules, and the service must answer exactly that:
an unexpected allow fails the test. One app serves the whole module; every case
works in an organization of its own.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import func, select

from careloop_contracts import AccessRecorded, Envelope
from careloop_contracts.envelope import to_headers
from careloop_contracts.identity import LocationCreated
from careloop_contracts.referrals import ReferralEvent, ReferralReceived, ReferralStageChanged
from careloop_contracts.scheduling import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentEvent,
    AppointmentNoShow,
)
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
from careloop_kit.service import Runtime
from careloop_kit.testing.services import ServiceSettingsFactory
from careloop_patients.app import create_app
from careloop_patients.domain.patient import ALL_CATEGORIES
from careloop_patients.settings import PatientsSettings
from careloop_patients.store.tables import care_relationship, platform

pytestmark = pytest.mark.service

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
    service_settings: ServiceSettingsFactory,
) -> AsyncIterator[Matrix]:
    settings = await service_settings(PatientsSettings, "patients")
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
    # The record's six routes and the four of its clinical facts.
    assert len(routes) == 10
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


# Care relationships: the record lives at HOME; scheduling books the patient at SECOND.
# Staff scoped to SECOND reach the record once patients has consumed the booking, with
# exactly the categories their role allows, and lose it at the next request after the
# cancellation; staff of THIRD never reach it.
HOME, SECOND, THIRD = OWN_LOCATION, OTHER_LOCATION, "loc-c"
STAFF_ROLES = [role for role in ROLES if role not in OWN_RECORD_ROLES]
RELATIONSHIP_PURPOSE = "APPOINTMENT_RELATIONSHIP"


def appointment_event(
    kind: type[AppointmentEvent],
    *,
    org_id: str,
    patient_id: str,
    appointment_id: str,
    location_id: str,
    status: str,
    start_at: datetime,
    occurred_at: datetime,
) -> AppointmentEvent:
    return kind(
        appointment_id=appointment_id,
        patient_id=patient_id,
        org_id=org_id,
        location_id=location_id,
        provider_id="prov-1",
        appointment_type_id="type-1",
        start_at=start_at,
        end_at=start_at + timedelta(minutes=30),
        status=status,
        confirmation="unconfirmed",
        occurred_at=occurred_at,
    )


async def publish(matrix: Matrix, event: AppointmentEvent, *, event_id: str | None = None) -> str:
    """Publish a scheduling event on the scheduling topic, as scheduling's relay would
    (same envelope headers, keyed by patient); returns the event id."""
    envelope = Envelope(
        id=event_id or str(uuid.uuid4()),
        type=event.event_type,
        source="/careloop/scheduling",
        time=datetime.now(UTC),
        subject=event.partition_key(),
        org_id=event.org_id,
        location_id=event.location_id,
    )
    await matrix.runtime.producer.send_and_wait(
        matrix.runtime.topic(event.topic),
        value=event.to_json(),
        key=event.partition_key().encode(),
        headers=to_headers(envelope),
    )
    return envelope.id


async def relationship_rows(matrix: Matrix, org_id: str) -> list[dict[str, Any]]:
    async with matrix.runtime.sessionmaker() as session:
        rows = await session.execute(
            select(care_relationship)
            .where(care_relationship.c.org_id == org_id)
            .order_by(care_relationship.c.since)
        )
        return [dict(row._mapping) for row in rows]


async def wait_rows(
    matrix: Matrix,
    org_id: str,
    until: Callable[[list[dict[str, Any]]], bool],
    *,
    timeout_s: float = 30.0,
) -> list[dict[str, Any]]:
    """The org's relationship rows once `until` holds (the consumer has caught up)."""
    deadline = time.monotonic() + timeout_s
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = await relationship_rows(matrix, org_id)
        if until(rows):
            return rows
        await asyncio.sleep(0.2)
    raise AssertionError(f"care relationships of {org_id} never reached the state: {rows}")


async def access_records(matrix: Matrix, patient_id: str) -> list[dict[str, Any]]:
    """The access records staged for a patient, in the order they were written."""
    outbox = platform.outbox
    async with matrix.runtime.sessionmaker() as session:
        payloads = await session.scalars(
            select(outbox.c.payload)
            .where(outbox.c.event_type == AccessRecorded.event_type)
            .order_by(outbox.c.id)
        )
        records = [json.loads(payload) for payload in payloads]
    return [r for r in records if r["patient_id"] == patient_id]


async def inboxed(matrix: Matrix, event_id: str) -> int:
    inbox = platform.inbox
    async with matrix.runtime.sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).select_from(inbox).where(inbox.c.event_id == event_id)
        )
    return int(count or 0)


async def wait_inboxed(matrix: Matrix, event_id: str, *, timeout_s: float = 30.0) -> None:
    """Until the consumer has applied the event (its inbox mark commits with the effect)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await inboxed(matrix, event_id):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"event {event_id} was never applied")


def staff_headers(matrix: Matrix, org_id: str, role: str, location: str) -> dict[str, str]:
    return matrix.headers(
        org=org_id,
        sub=f"{role}-{location}",
        sid=f"sid-{role}-{location}",
        roles=[role],
        loc=[location],
        amr=["pwd", "otp"],
    )


async def read_and_update(
    matrix: Matrix, patient_id: str, headers: dict[str, str], *, version: int
) -> tuple[httpx.Response, httpx.Response]:
    read = await matrix.client.get(f"/patients/{patient_id}", headers=headers)
    update = await matrix.client.patch(
        f"/patients/{patient_id}",
        json={"version": version, "preferred_language": "fr"},
        headers=headers,
    )
    return read, update


@pytest.mark.parametrize("role", STAFF_ROLES)
async def test_a_booked_appointment_opens_the_record_to_its_location(
    matrix: Matrix, role: str
) -> None:
    org_id = f"org-{uuid.uuid4().hex[:12]}"
    patient_id = await matrix.register(org_id, HOME, uuid.uuid4().hex[:10])
    second = staff_headers(matrix, org_id, role, SECOND)
    third = staff_headers(matrix, org_id, role, THIRD)
    may_read = holds(role, "patients:read")
    may_update = holds(role, "patients:update")
    start = datetime.now(UTC) + timedelta(days=3)
    appointment = f"appt-{uuid.uuid4().hex[:10]}"
    fields: dict[str, Any] = {
        "org_id": org_id,
        "patient_id": patient_id,
        "appointment_id": appointment,
        "location_id": SECOND,
        "start_at": start,
    }

    before = await read_and_update(matrix, patient_id, second, version=1)
    assert [r.status_code for r in before] == [403, 403], role

    await publish(
        matrix,
        appointment_event(
            AppointmentBooked, status="booked", occurred_at=datetime.now(UTC), **fields
        ),
    )
    rows = await wait_rows(matrix, org_id, lambda rows: len(rows) == 1)
    assert rows[0]["patient_id"] == patient_id
    assert rows[0]["location_id"] == SECOND
    assert rows[0]["kind"] == "appointment"
    assert rows[0]["source_id"] == appointment
    assert rows[0]["ended_at"] is None

    read, update = await read_and_update(matrix, patient_id, second, version=1)
    if may_read:
        assert read.status_code == 200, (role, read.text)
        # Exactly the categories the role allows, as at the record's own location.
        visible = shown(role, "patients:read")
        assert read.json()["withheld_categories"] == [
            c for c in ALL_CATEGORIES if c not in visible
        ], role
    else:
        assert read.status_code == 403, role
    if may_update:
        assert update.status_code == 200, (role, update.text)
        assert update.json()["version"] == 2
    else:
        assert update.status_code == 403, role
    # A relationship at SECOND opens nothing to the staff of a third location.
    elsewhere = await read_and_update(matrix, patient_id, third, version=2)
    assert [r.status_code for r in elsewhere] == [403, 403], role

    await publish(
        matrix,
        appointment_event(
            AppointmentCancelled, status="cancelled", occurred_at=datetime.now(UTC), **fields
        ),
    )
    rows = await wait_rows(matrix, org_id, lambda rows: rows[0]["ended_at"] is not None)
    assert rows[0]["end_reason"] == "cancelled"
    after = await read_and_update(matrix, patient_id, second, version=2)
    assert [r.status_code for r in after] == [403, 403], role

    if may_read:
        trail = await access_records(matrix, patient_id)
        mine = [r for r in trail if r["actor_id"] == f"{role}-{SECOND}" and r["action"] == "read"]
        assert [(r["outcome"], r["purpose_of_use"]) for r in mine] == [
            ("denied", "TREAT"),
            ("success", RELATIONSHIP_PURPOSE),
            ("denied", "TREAT"),
        ], role


async def test_the_audit_trail_names_the_relationship_and_its_opening_and_end(
    matrix: Matrix,
) -> None:
    org_id = f"org-{uuid.uuid4().hex[:12]}"
    patient_id = await matrix.register(org_id, HOME, uuid.uuid4().hex[:10])
    fields: dict[str, Any] = {
        "org_id": org_id,
        "patient_id": patient_id,
        "appointment_id": f"appt-{uuid.uuid4().hex[:10]}",
        "location_id": SECOND,
        "start_at": datetime.now(UTC) + timedelta(days=1),
    }
    await publish(
        matrix,
        appointment_event(
            AppointmentBooked, status="booked", occurred_at=datetime.now(UTC), **fields
        ),
    )
    (row,) = await wait_rows(matrix, org_id, lambda rows: len(rows) == 1)
    provider = staff_headers(matrix, org_id, "provider", SECOND)
    assert (await matrix.client.get(f"/patients/{patient_id}", headers=provider)).status_code == 200
    await publish(
        matrix,
        appointment_event(
            AppointmentCancelled, status="cancelled", occurred_at=datetime.now(UTC), **fields
        ),
    )
    await wait_rows(matrix, org_id, lambda rows: rows[0]["ended_at"] is not None)

    trail = await access_records(matrix, patient_id)
    changes = [r for r in trail if r["resource_type"] == "CareRelationship"]
    assert [(r["action"], r["resource_id"], r["actor_type"]) for r in changes] == [
        ("create", row["id"], "system"),
        ("update", row["id"], "system"),
    ]
    assert all(r["phi_categories"] == [] for r in changes)
    assert all(r["purpose_of_use"] == RELATIONSHIP_PURPOSE for r in changes)
    (opened_read,) = [r for r in trail if r["actor_id"] == f"provider-{SECOND}"]
    assert opened_read["action"] == "read"
    assert opened_read["outcome"] == "success"
    assert opened_read["purpose_of_use"] == RELATIONSHIP_PURPOSE
    assert opened_read["resource_id"] == patient_id


async def test_a_redelivered_event_is_a_no_op(matrix: Matrix) -> None:
    org_id = f"org-{uuid.uuid4().hex[:12]}"
    patient_id = await matrix.register(org_id, HOME, uuid.uuid4().hex[:10])
    start = datetime.now(UTC) + timedelta(days=2)
    fields: dict[str, Any] = {
        "org_id": org_id,
        "patient_id": patient_id,
        "appointment_id": f"appt-{uuid.uuid4().hex[:10]}",
        "location_id": SECOND,
        "start_at": start,
    }
    booked = appointment_event(
        AppointmentBooked, status="booked", occurred_at=datetime.now(UTC), **fields
    )
    booked_id = await publish(matrix, booked)
    await wait_rows(matrix, org_id, lambda rows: len(rows) == 1)
    cancelled = appointment_event(
        AppointmentCancelled, status="cancelled", occurred_at=datetime.now(UTC), **fields
    )
    cancelled_id = await publish(matrix, cancelled)
    await wait_rows(matrix, org_id, lambda rows: rows[0]["ended_at"] is not None)

    # Both again, exactly as the broker would redeliver them (same ids), then a marker
    # booking at THIRD on the same key, so the same partition: behind both.
    await publish(matrix, booked, event_id=booked_id)
    await publish(matrix, cancelled, event_id=cancelled_id)
    await publish(
        matrix,
        appointment_event(
            AppointmentBooked,
            status="booked",
            occurred_at=datetime.now(UTC),
            **{**fields, "appointment_id": f"appt-{uuid.uuid4().hex[:10]}", "location_id": THIRD},
        ),
    )
    rows = await wait_rows(matrix, org_id, lambda rows: len(rows) == 2)

    first = rows[0]
    assert first["location_id"] == SECOND
    assert first["ended_at"] is not None, "a redelivered booking must not reopen access"
    assert await inboxed(matrix, booked_id) == 1
    assert await inboxed(matrix, cancelled_id) == 1
    changes = [
        r["action"]
        for r in await access_records(matrix, patient_id)
        if r["resource_id"] == first["id"]
    ]
    assert changes == ["create", "update"]
    second = staff_headers(matrix, org_id, "front_desk", SECOND)
    assert (await matrix.client.get(f"/patients/{patient_id}", headers=second)).status_code == 403


async def test_the_relationship_holds_while_another_appointment_at_the_location_does(
    matrix: Matrix,
) -> None:
    org_id = f"org-{uuid.uuid4().hex[:12]}"
    patient_id = await matrix.register(org_id, HOME, uuid.uuid4().hex[:10])
    now = datetime.now(UTC)
    common: dict[str, Any] = {"org_id": org_id, "patient_id": patient_id, "location_id": SECOND}
    first, later, past = (f"appt-{uuid.uuid4().hex[:10]}" for _ in range(3))
    for appointment, start in ((first, now + timedelta(days=1)), (later, now + timedelta(days=9))):
        await publish(
            matrix,
            appointment_event(
                AppointmentBooked,
                status="booked",
                occurred_at=now,
                appointment_id=appointment,
                start_at=start,
                **common,
            ),
        )
    await wait_rows(matrix, org_id, lambda rows: len(rows) == 2)
    await publish(
        matrix,
        appointment_event(
            AppointmentCancelled,
            status="cancelled",
            occurred_at=now,
            appointment_id=first,
            start_at=now + timedelta(days=1),
            **common,
        ),
    )
    await wait_rows(matrix, org_id, lambda rows: any(r["ended_at"] for r in rows))
    desk = staff_headers(matrix, org_id, "front_desk", SECOND)
    assert (await matrix.client.get(f"/patients/{patient_id}", headers=desk)).status_code == 200

    # A visit that took place (no-show), cancelled afterwards: the relationship stays.
    await publish(
        matrix,
        appointment_event(
            AppointmentNoShow,
            status="noshow",
            occurred_at=now,
            appointment_id=past,
            start_at=now - timedelta(hours=2),
            **common,
        ),
    )
    await wait_rows(matrix, org_id, lambda rows: len(rows) == 3)
    await publish(
        matrix,
        appointment_event(
            AppointmentCancelled,
            status="cancelled",
            occurred_at=now,
            appointment_id=later,
            start_at=now + timedelta(days=9),
            **common,
        ),
    )
    late_cancel = await publish(
        matrix,
        appointment_event(
            AppointmentCancelled,
            status="cancelled",
            occurred_at=now,
            appointment_id=past,
            start_at=now - timedelta(hours=2),
            **common,
        ),
    )
    await wait_inboxed(matrix, late_cancel)
    rows = await relationship_rows(matrix, org_id)
    assert [r["source_id"] for r in rows if r["ended_at"] is None] == [past]
    assert (await matrix.client.get(f"/patients/{patient_id}", headers=desk)).status_code == 200


async def test_a_merged_patients_relationships_follow_the_survivor(matrix: Matrix) -> None:
    org_id = f"org-{uuid.uuid4().hex[:12]}"
    marker = uuid.uuid4().hex[:10]
    survivor = await matrix.register(org_id, HOME, marker)
    duplicate = await matrix.register(org_id, HOME, marker + "d")
    start = datetime.now(UTC) + timedelta(days=4)
    await publish(
        matrix,
        appointment_event(
            AppointmentBooked,
            status="booked",
            occurred_at=datetime.now(UTC),
            org_id=org_id,
            patient_id=duplicate,
            appointment_id=f"appt-{uuid.uuid4().hex[:10]}",
            location_id=SECOND,
            start_at=start,
        ),
    )
    await wait_rows(matrix, org_id, lambda rows: len(rows) == 1)
    merged = await matrix.client.post(
        f"/patients/{survivor}/merge",
        json={"merged_patient_id": duplicate, "version": 1},
        headers=matrix.admin(org_id),
    )
    assert merged.status_code == 200, merged.text
    rows = await relationship_rows(matrix, org_id)
    assert [r["patient_id"] for r in rows] == [survivor]
    # Scheduling may still book under the merged id: the relationship is the survivor's.
    await publish(
        matrix,
        appointment_event(
            AppointmentBooked,
            status="booked",
            occurred_at=datetime.now(UTC),
            org_id=org_id,
            patient_id=duplicate,
            appointment_id=f"appt-{uuid.uuid4().hex[:10]}",
            location_id=THIRD,
            start_at=start,
        ),
    )
    rows = await wait_rows(matrix, org_id, lambda rows: len(rows) == 2)
    assert {r["patient_id"] for r in rows} == {survivor}
    for location in (SECOND, THIRD):
        desk = staff_headers(matrix, org_id, "front_desk", location)
        opened = await matrix.client.get(f"/patients/{survivor}", headers=desk)
        assert opened.status_code == 200, (location, opened.text)


async def test_no_relationship_opens_a_record_of_a_sensitive_location(matrix: Matrix) -> None:
    org_id = f"org-{uuid.uuid4().hex[:12]}"
    sensitive_home = f"loc-bh-{uuid.uuid4().hex[:6]}"
    patient_id = await matrix.register(org_id, sensitive_home, uuid.uuid4().hex[:10])
    location = LocationCreated(
        org_id=org_id,
        location_id=sensitive_home,
        name="Counseling Center",
        time_zone="America/New_York",
        sensitive=True,
        features={},
        occurred_at=datetime.now(UTC),
    )
    envelope = Envelope(
        id=str(uuid.uuid4()),
        type=location.event_type,
        source="/careloop/identity",
        time=datetime.now(UTC),
        subject=location.partition_key(),
        org_id=org_id,
        location_id=sensitive_home,
    )
    await matrix.runtime.producer.send_and_wait(
        matrix.runtime.topic(location.topic),
        value=location.to_json(),
        key=location.partition_key().encode(),
        headers=to_headers(envelope),
    )
    await wait_inboxed(matrix, envelope.id)
    await publish(
        matrix,
        appointment_event(
            AppointmentBooked,
            status="booked",
            occurred_at=datetime.now(UTC),
            org_id=org_id,
            patient_id=patient_id,
            appointment_id=f"appt-{uuid.uuid4().hex[:10]}",
            location_id=SECOND,
            start_at=datetime.now(UTC) + timedelta(days=2),
        ),
    )
    (row,) = await wait_rows(matrix, org_id, lambda rows: len(rows) == 1)
    assert row["ended_at"] is None

    for role in ("provider", "front_desk"):
        second = staff_headers(matrix, org_id, role, SECOND)
        refused = await read_and_update(matrix, patient_id, second, version=1)
        assert [r.status_code for r in refused] == [403, 403], role
    own = staff_headers(matrix, org_id, "provider", sensitive_home)
    assert (await matrix.client.get(f"/patients/{patient_id}", headers=own)).status_code == 200
    # The clinical facts sit behind the same wall.
    facts = f"/patients/{patient_id}/facts"
    second = staff_headers(matrix, org_id, "provider", SECOND)
    assert (await matrix.client.get(facts, headers=second)).status_code == 403
    assert (await matrix.client.get(facts, headers=own)).status_code == 200


def synthetic_observation(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-01-15",
        "valueQuantity": {"value": 6.9, "system": "http://unitsofmeasure.org", "code": "%"},
    }


async def test_a_care_relationship_opens_the_facts_as_it_opens_the_record(
    matrix: Matrix,
) -> None:
    org_id = f"org-{uuid.uuid4().hex[:12]}"
    patient_id = await matrix.register(org_id, HOME, uuid.uuid4().hex[:10])
    facts = f"/patients/{patient_id}/facts"
    provider = staff_headers(matrix, org_id, "provider", SECOND)
    desk = staff_headers(matrix, org_id, "front_desk", SECOND)
    fields: dict[str, Any] = {
        "org_id": org_id,
        "patient_id": patient_id,
        "appointment_id": f"appt-{uuid.uuid4().hex[:10]}",
        "location_id": SECOND,
        "start_at": datetime.now(UTC) + timedelta(days=2),
    }

    async def reach() -> list[int]:
        written = await matrix.client.post(
            facts, json=synthetic_observation(patient_id), headers=provider
        )
        listed = await matrix.client.get(facts, headers=provider)
        return [written.status_code, listed.status_code]

    assert await reach() == [403, 403]
    await publish(
        matrix,
        appointment_event(
            AppointmentBooked, status="booked", occurred_at=datetime.now(UTC), **fields
        ),
    )
    await wait_rows(matrix, org_id, lambda rows: len(rows) == 1)
    assert await reach() == [201, 200]
    # The relationship opens the record, not the clinical data a role may not see.
    assert (await matrix.client.get(facts, headers=desk)).status_code == 403
    await publish(
        matrix,
        appointment_event(
            AppointmentCancelled, status="cancelled", occurred_at=datetime.now(UTC), **fields
        ),
    )
    await wait_rows(matrix, org_id, lambda rows: rows[0]["ended_at"] is not None)
    assert await reach() == [403, 403]
    trail = await access_records(matrix, patient_id)
    reads = [
        r["purpose_of_use"]
        for r in trail
        if r["resource_type"] == "Bundle" and r["actor_id"] == f"provider-{SECOND}"
    ]
    assert reads == ["TREAT", RELATIONSHIP_PURPOSE, "TREAT"]


def referral_event(kind: type[ReferralEvent], **fields: Any) -> ReferralEvent:
    base: dict[str, Any] = {
        "direction": "inbound",
        "urgency": "routine",
        "task_status": "received",
        "occurred_at": datetime.now(UTC),
    }
    return kind(**{**base, **fields})


async def test_a_referral_opens_the_record_to_its_location_until_it_leaves_the_loop(
    matrix: Matrix,
) -> None:
    org_id = f"org-{uuid.uuid4().hex[:12]}"
    patient_id = await matrix.register(org_id, HOME, uuid.uuid4().hex[:10])
    coordinator = staff_headers(matrix, org_id, "care_coordinator", SECOND)
    referral = f"ref-{uuid.uuid4().hex[:10]}"
    fields: dict[str, Any] = {
        "org_id": org_id,
        "patient_id": patient_id,
        "referral_id": referral,
        "location_id": SECOND,
    }
    assert (
        await matrix.client.get(f"/patients/{patient_id}", headers=coordinator)
    ).status_code == 403

    received = referral_event(
        ReferralReceived, stage="received", version=1, referring_provider_id="dir-1", **fields
    )
    await publish(matrix, received)  # type: ignore[arg-type]
    rows = await wait_rows(matrix, org_id, lambda rows: len(rows) == 1)
    assert (rows[0]["kind"], rows[0]["source_id"], rows[0]["location_id"]) == (
        "referral",
        referral,
        SECOND,
    )
    read = await matrix.client.get(f"/patients/{patient_id}", headers=coordinator)
    assert read.status_code == 200, read.text

    triaged = referral_event(
        ReferralStageChanged, stage="triaged", from_stage="received", version=2, **fields
    )
    cancelled = referral_event(
        ReferralStageChanged,
        stage="cancelled",
        from_stage="triaged",
        version=3,
        task_status="cancelled",
        **fields,
    )
    for event in (triaged, cancelled):
        await publish(matrix, event)  # type: ignore[arg-type]
    rows = await wait_rows(matrix, org_id, lambda rows: rows[0]["ended_at"] is not None)
    assert rows[0]["end_reason"] == "cancelled"
    assert (
        await matrix.client.get(f"/patients/{patient_id}", headers=coordinator)
    ).status_code == 403
    trail = await access_records(matrix, patient_id)
    reads = [
        r for r in trail if r["actor_id"] == f"care_coordinator-{SECOND}" and r["action"] == "read"
    ]
    assert [(r["outcome"], r["purpose_of_use"]) for r in reads] == [
        ("denied", "TREAT"),
        ("success", "REFERRAL_RELATIONSHIP"),
        ("denied", "TREAT"),
    ]
