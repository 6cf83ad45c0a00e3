"""The audit service's authorization matrix, generated from the permission table.

Every principal (each role in `ROLES`, a partner client holding each partner scope, each
service identity with grants) x every audit endpoint x every situation (the caller's
own tenant, another tenant's object, and for staff a token without a second factor)
gets an expected outcome computed from the permission table and the object rules; the
service must answer exactly that, so an unexpected allow fails the test.

Object rules: a caller only ever sees its own organization's records (the token's
`org`). Another tenant's trail or query answers 200 with none of its records, another
tenant's record exported as FHIR is not found (404). Verification covers the whole
log and returns no records at all, so it has no other-tenant object to aim at.

One app serves the module, with a little audit data seeded in two tenants (sharing a
patient id and an actor id, so a leak across tenants would show); every case is made
in tenant A, and no answer may carry anything of tenant B.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from careloop_audit.app import create_app
from careloop_audit.settings import AuditSettings
from careloop_contracts import AccessRecorded, Envelope, to_headers
from careloop_kit.auth import ROLES, StaticJwksSource, allowed, requires_mfa
from careloop_kit.auth.dependencies import required_permission
from careloop_kit.auth.permissions import (
    OWN_RECORD_ROLES,
    PARTNER_SCOPES,
    SERVICE_GRANTS,
    service_subject,
)
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import SystemClock
from careloop_kit.testing.services import ServiceSettingsFactory

pytestmark = pytest.mark.service


# Each endpoint, the route that serves it and the permission it needs (the permission
# table decides who holds it). `test_the_matrix_covers_every_guarded_route` holds this
# list equal to the app's route table.
ENDPOINTS: dict[str, tuple[str, str, str]] = {
    "trail": ("GET", "/audit/patients/{patient_id}/trail", "audit:read"),
    "query": ("GET", "/audit/events", "audit:read"),
    "fhir": ("GET", "/audit/events/{audit_id}/fhir", "audit:read"),
    "verify": ("POST", "/audit/verify", "audit:verify"),
}
# Endpoints that name no tenant-owned object: nothing to aim at another tenant.
WHOLE_LOG = frozenset({"verify"})

OWN, OTHER, NO_MFA = "own_tenant", "other_tenant", "own_tenant_no_mfa"
ALLOW = "allow"
MFA_REQUIRED = "multi-factor authentication required"


@dataclass(frozen=True)
class Caller:
    """Who calls: a role (staff or patient), a partner client or a service identity."""

    kind: str  # "role", "partner" or "service"
    name: str  # the role, the partner's scope, or the service

    @property
    def id(self) -> str:
        return self.name if self.kind == "role" else f"{self.kind}:{self.name}"

    @property
    def is_staff(self) -> bool:
        return self.kind == "role" and self.name not in OWN_RECORD_ROLES

    def holds(self, permission: str) -> bool:
        """Whether the permission table grants `permission` to this caller."""
        if self.kind == "partner":
            # A partner holds exactly the scopes in its token; only partner scopes exist.
            return self.name == permission and permission in PARTNER_SCOPES
        if self.kind == "service":
            return permission in SERVICE_GRANTS.get(self.name, {})
        return allowed(self.name, permission)

    def needs_mfa(self) -> bool:
        return self.kind == "role" and requires_mfa(self.name)


CALLERS = (
    [Caller("role", role) for role in ROLES]
    + [Caller("partner", scope) for scope in PARTNER_SCOPES]
    + [Caller("service", service) for service in SERVICE_GRANTS]
)


def situations(caller: Caller, endpoint: str) -> tuple[str, ...]:
    own_and_other = (OWN,) if endpoint in WHOLE_LOG else (OWN, OTHER)
    # Staff tokens may lack a second factor; patients, partners and services have none
    # to show (their permissions never depend on it).
    return (*own_and_other, NO_MFA) if caller.is_staff else own_and_other


def expected(caller: Caller, endpoint: str, situation: str) -> str | int:
    """ALLOW or the refusal status, from the permission table and the object rules."""
    permission = ENDPOINTS[endpoint][2]
    if not caller.holds(permission):
        return 403
    if situation == NO_MFA and caller.needs_mfa():
        return 403
    if situation == OTHER and endpoint == "fhir":
        # Another tenant's record is not found, not forbidden: its existence stays hidden.
        return 404
    return ALLOW


@dataclass(frozen=True)
class Case:
    caller: Caller
    endpoint: str
    situation: str

    @property
    def id(self) -> str:
        return f"{self.caller.id}-{self.endpoint}-{self.situation}"


CASES = [
    Case(caller, endpoint, situation)
    for caller in CALLERS
    for endpoint in ENDPOINTS
    for situation in situations(caller, endpoint)
]


@dataclass(frozen=True)
class Tenant:
    """One organization's seeded records: one about the shared patient by the shared
    actor, one about a patient and by an actor of its own."""

    org_id: str
    shared_record: str
    own_record: str
    own_patient: str
    own_actor: str

    @property
    def audit_ids(self) -> frozenset[str]:
        return frozenset({self.shared_record, self.own_record})


@dataclass
class Matrix:
    app: FastAPI
    client: httpx.AsyncClient
    issuer: TestTokenIssuer
    shared_patient: str
    shared_actor: str
    a: Tenant
    b: Tenant

    def headers(self, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer.mint(**claims)}"}

    def auditor(self, org_id: str) -> dict[str, str]:
        return self.headers(org=org_id, sub="seed-auditor", roles=["auditor"], loc=[])


def access(org_id: str, patient_id: str, actor_id: str) -> AccessRecorded:
    return AccessRecorded(
        audit_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        org_id=org_id,
        actor_id=actor_id,
        actor_type="user",
        action="read",
        outcome="success",
        patient_id=patient_id,
        resource_type="Patient",
        resource_id=patient_id,
        phi_categories=("demographics",),
        source_service="patients",
        request_id=f"req-{uuid.uuid4().hex[:8]}",
    )


async def seed(
    producer: AIOKafkaProducer, topic: str, org_id: str, shared_patient: str, shared_actor: str
) -> Tenant:
    """Publish a tenant's two access records, as the patients service would."""
    unique = uuid.uuid4().hex[:8]
    own_patient, own_actor = f"pat-{unique}", f"dr-{unique}"
    events = [access(org_id, shared_patient, shared_actor), access(org_id, own_patient, own_actor)]
    for event in events:
        envelope = Envelope.for_event(event, source="/careloop/patients", time=datetime.now(UTC))
        await producer.send_and_wait(
            topic,
            value=event.to_json(),
            key=event.partition_key().encode(),
            headers=to_headers(envelope),
        )
    return Tenant(
        org_id=org_id,
        shared_record=str(events[0].audit_id),
        own_record=str(events[1].audit_id),
        own_patient=own_patient,
        own_actor=own_actor,
    )


async def wait_until_logged(matrix: Matrix, tenant: Tenant, within_s: float = 40.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        response = await matrix.client.get(
            "/audit/events", params={"limit": 200}, headers=matrix.auditor(tenant.org_id)
        )
        assert response.status_code == 200, response.text
        if tenant.audit_ids <= {item["audit_id"] for item in response.json()["items"]}:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the seeded records of {tenant.org_id} never joined the log")
        await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
async def matrix(
    service_settings: ServiceSettingsFactory,
    kafka_bootstrap: str,
) -> AsyncIterator[Matrix]:
    unique = uuid.uuid4().hex[:10]
    settings = await service_settings(AuditSettings, "audit", database_pool_size=4)
    issuer = TestTokenIssuer(SystemClock())
    app = create_app(settings, jwks=StaticJwksSource(issuer.jwks_document()))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://audit"
            ) as client,
        ):
            topic = f"{settings.topic_prefix}careloop.patients"
            shared_patient, shared_actor = f"pat-shared-{unique}", f"dr-shared-{unique}"
            a = await seed(producer, topic, f"org-a-{unique}", shared_patient, shared_actor)
            b = await seed(producer, topic, f"org-b-{unique}", shared_patient, shared_actor)
            matrix = Matrix(app, client, issuer, shared_patient, shared_actor, a, b)
            await wait_until_logged(matrix, a)
            await wait_until_logged(matrix, b)
            yield matrix
    finally:
        await producer.stop()


def claims_for(case: Case, matrix: Matrix) -> dict[str, Any]:
    """A token of the case's caller in tenant A."""
    marker = uuid.uuid4().hex[:10]
    caller = case.caller
    claims: dict[str, Any] = {
        "org": matrix.a.org_id,
        "sid": f"sid-{marker}",
        "sub": f"{caller.name}-{marker}",
        "roles": [caller.name],
        "loc": ["*"],
        "amr": ["pwd"] if case.situation == NO_MFA else ["pwd", "otp"],
    }
    if caller.kind == "role" and caller.name in OWN_RECORD_ROLES:
        claims.update(act="patient", loc=[], amr=["pwd"], pat=matrix.shared_patient)
    elif caller.kind == "partner":
        claims.update(act="partner", sub=f"client-{marker}", roles=[], loc=[], scope=caller.name)
    elif caller.kind == "service":
        claims.update(act="service", sub=service_subject(caller.name), roles=[], loc=[])
    return claims


async def call(matrix: Matrix, case: Case, headers: dict[str, str]) -> httpx.Response:
    """The case's request: aimed at tenant A's data, or at tenant B's for OTHER."""
    target = matrix.b if case.situation == OTHER else matrix.a
    client = matrix.client
    if case.endpoint == "trail":
        # Own tenant: the patient both tenants know; other: a patient only B knows.
        patient = target.own_patient if case.situation == OTHER else matrix.shared_patient
        return await client.get(
            f"/audit/patients/{patient}/trail", params={"limit": 200}, headers=headers
        )
    if case.endpoint == "query":
        actor = target.own_actor if case.situation == OTHER else matrix.shared_actor
        return await client.get(
            "/audit/events", params={"actor_id": actor, "limit": 200}, headers=headers
        )
    if case.endpoint == "fhir":
        return await client.get(f"/audit/events/{target.own_record}/fhir", headers=headers)
    return await client.post("/audit/verify", headers=headers)


def check_allowed(matrix: Matrix, case: Case, response: httpx.Response) -> None:
    """What an allowed answer must hold: tenant A's records, and never one of B's."""
    body = response.json()
    if case.endpoint in ("trail", "query"):
        items = body["items"]
        assert {i["org_id"] for i in items} <= {matrix.a.org_id}, case
        assert not {i["audit_id"] for i in items} & matrix.b.audit_ids, case
        if case.situation == OTHER:
            # Nothing B logged is A's to see; A's own reads of that id may be listed.
            assert all(i["source_service"] == "audit" for i in items), case
            if case.endpoint == "query":
                assert items == [], case
        else:
            assert matrix.a.shared_record in {i["audit_id"] for i in items}, case
    elif case.endpoint == "fhir":
        assert body["resourceType"] == "AuditEvent", case
        assert body["id"] == matrix.a.own_record, case
    else:
        assert body["ok"] is True, case
        assert body["records_checked"] >= 4, case
        assert "items" not in body, case


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_authorization_matrix(matrix: Matrix, case: Case) -> None:
    response = await call(matrix, case, matrix.headers(**claims_for(case, matrix)))

    outcome = expected(case.caller, case.endpoint, case.situation)
    if outcome == ALLOW:
        assert response.status_code == 200, (case, response.status_code, response.text)
        check_allowed(matrix, case, response)
    else:
        assert response.status_code == outcome, (case, response.status_code, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        permission = ENDPOINTS[case.endpoint][2]
        if case.situation == NO_MFA and case.caller.holds(permission):
            assert response.json()["detail"].startswith(MFA_REQUIRED), case
    # Whatever the answer, nothing of tenant B's shows in it beyond the id the caller
    # itself sent (a problem names the path it answers).
    assert matrix.b.org_id not in response.text, case
    named = set(response.request.url.path.split("/"))
    for audit_id in matrix.b.audit_ids - named:
        assert audit_id not in response.text, case


def test_the_matrix_covers_every_caller_and_refuses_the_rest() -> None:
    assert {c.caller.name for c in CASES if c.caller.kind == "role"} == set(ROLES)
    assert {c.caller.name for c in CASES if c.caller.kind == "partner"} == set(PARTNER_SCOPES)
    assert Caller("service", "messaging") in CALLERS
    for caller in CALLERS:
        outcomes = [
            expected(c.caller, c.endpoint, c.situation) for c in CASES if c.caller == caller
        ]
        assert any(o != ALLOW for o in outcomes), caller
    # Partner clients and services hold no audit permission: the log is never theirs.
    clients = [c for c in CASES if c.caller.kind != "role"]
    assert all(expected(c.caller, c.endpoint, c.situation) == 403 for c in clients)
    assert any(expected(c.caller, c.endpoint, c.situation) == ALLOW for c in CASES)


def _permissions_in(dependant: Dependant) -> set[str]:
    """Every permission a `require(...)` dependency enforces anywhere in the tree."""
    found: set[str] = set()
    stack = [dependant]
    while stack:
        node = stack.pop()
        permission = required_permission(node.call)
        if permission is not None:
            found.add(permission)
        stack.extend(node.dependencies)
    return found


def test_the_matrix_covers_every_guarded_route(matrix: Matrix) -> None:
    guarded: dict[tuple[str, str], set[str]] = {}
    # FastAPI includes routers lazily: walk the effective routes, not `app.routes`.
    for route in iter_route_contexts(matrix.app.routes):
        if not isinstance(route.original_route, APIRoute):
            continue
        permissions = _permissions_in(route.dependant)
        if permissions:
            for method in route.methods or ():
                guarded[(method, route.path or "")] = permissions
    tested = {(method, path): {permission} for method, path, permission in ENDPOINTS.values()}
    assert guarded == tested
