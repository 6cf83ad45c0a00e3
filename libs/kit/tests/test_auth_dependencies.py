"""`require(permission)` inside a service: 401 without a valid token, 403 without
the permission or outside the tenant, location or own record."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from careloop_kit.auth import (
    PERMISSIONS,
    ROLES,
    AuthenticatedPrincipal,
    Principal,
    RevokedSessions,
    TokenVerifier,
    allowed,
    ensure_token_verifier,
    install_auth_handlers,
    require,
    visible_categories,
)
from careloop_kit.auth.testing import OMIT, TestTokenIssuer
from careloop_kit.clock import FrozenClock
from careloop_kit.problems import NotFound, install_problem_handlers

pytestmark = pytest.mark.unit

# (org, patient) -> location
PATIENTS = {("org-1", "p-1"): "loc-1", ("org-1", "p-2"): "loc-2", ("org-2", "p-3"): "loc-9"}


def build_app(verifier: TokenVerifier | None) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    install_auth_handlers(app)
    app.state.runtime = SimpleNamespace(
        state={} if verifier is None else {"token_verifier": verifier}
    )

    @app.get("/patients/{patient_id}")
    async def read_patient(
        patient_id: str,
        principal: Annotated[AuthenticatedPrincipal, Depends(require("patients:read"))],
    ) -> dict[str, Any]:
        location = PATIENTS.get((principal.org_id, patient_id))
        if location is None:
            raise NotFound("No such patient.")
        principal.can_access_patient(patient_id, location)
        return {
            "id": patient_id,
            "categories": sorted(visible_categories(principal, "patients:read")),
        }

    @app.get("/orgs/{org_id}/locations/{location_id}/patients")
    async def list_patients(
        org_id: str,
        location_id: str,
        principal: Annotated[AuthenticatedPrincipal, Depends(require("patients:search"))],
    ) -> list[str]:
        principal.can_access_org(org_id)
        principal.can_access_location(location_id)
        return sorted(p for (o, p), loc in PATIENTS.items() if o == org_id and loc == location_id)

    @app.post("/patients/merge")
    async def merge(
        principal: Annotated[AuthenticatedPrincipal, Depends(require("patients:merge"))],
    ) -> dict[str, str]:
        return {"merged_by": principal.actor_id}

    for permission in PERMISSIONS:
        app.add_api_route(f"/check/{permission}", _check(permission), methods=["GET"])
    return app


def _check(permission: str) -> Any:
    async def endpoint(
        principal: AuthenticatedPrincipal = Depends(require(permission)),
    ) -> dict[str, str]:
        return {"actor": principal.actor_id}

    return endpoint


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def issuer(clock: FrozenClock) -> TestTokenIssuer:
    return TestTokenIssuer(clock)


@pytest.fixture
def revoked(clock: FrozenClock) -> RevokedSessions:
    return RevokedSessions(clock=clock)


def http(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")


@pytest.fixture
async def client(
    issuer: TestTokenIssuer, revoked: RevokedSessions
) -> AsyncIterator[httpx.AsyncClient]:
    async with http(build_app(issuer.verifier(revoked=revoked))) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_no_token_is_401_with_bearer_challenge(client: httpx.AsyncClient) -> None:
    response = await client.get("/patients/p-1")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 401


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "bearer not-a-jwt", "Token x.y.z"]
)
async def test_malformed_authorization_is_401(client: httpx.AsyncClient, header: str) -> None:
    response = await client.get("/patients/p-1", headers={"Authorization": header})

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_invalid_token_is_401_and_not_echoed(
    client: httpx.AsyncClient, issuer: TestTokenIssuer
) -> None:
    token = issuer.sign(issuer.header(alg="none"), issuer.claims())

    response = await client.get("/patients/p-1", headers=bearer(token))

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert token not in response.text


async def test_expired_and_revoked_tokens_are_401(
    client: httpx.AsyncClient, issuer: TestTokenIssuer, clock: FrozenClock, revoked: RevokedSessions
) -> None:
    token = issuer.mint(roles=["front_desk"], loc=["*"])
    assert (await client.get("/patients/p-1", headers=bearer(token))).status_code == 200

    revoked.revoke("session-1")
    assert (await client.get("/patients/p-1", headers=bearer(token))).status_code == 401

    fresh = issuer.mint(roles=["front_desk"], loc=["*"], sid="session-2")
    clock.advance(timedelta(minutes=10))
    assert (await client.get("/patients/p-1", headers=bearer(fresh))).status_code == 401


async def test_wrong_role_is_403(client: httpx.AsyncClient, issuer: TestTokenIssuer) -> None:
    billing = issuer.mint(roles=["billing"], loc=["*"])
    auditor = issuer.mint(roles=["auditor"], loc=["*"])

    assert (await client.post("/patients/merge", headers=bearer(billing))).status_code == 403
    assert (await client.get("/patients/p-1", headers=bearer(auditor))).status_code == 403
    assert (await client.get("/patients/p-1", headers=bearer(billing))).status_code == 200


async def test_location_scope(client: httpx.AsyncClient, issuer: TestTokenIssuer) -> None:
    token = issuer.mint(roles=["provider"], loc=["loc-1"])
    everywhere = issuer.mint(roles=["provider"], loc=["*"])
    nowhere = issuer.mint(roles=["provider"], loc=OMIT)

    assert (await client.get("/patients/p-1", headers=bearer(token))).status_code == 200
    assert (await client.get("/patients/p-2", headers=bearer(token))).status_code == 403
    assert (await client.get("/patients/p-2", headers=bearer(everywhere))).status_code == 200
    assert (await client.get("/patients/p-1", headers=bearer(nowhere))).status_code == 403
    listing = "/orgs/org-1/locations/{}/patients"
    assert (await client.get(listing.format("loc-1"), headers=bearer(token))).json() == ["p-1"]
    assert (await client.get(listing.format("loc-2"), headers=bearer(token))).status_code == 403


async def test_patient_reaches_only_own_record(
    client: httpx.AsyncClient, issuer: TestTokenIssuer
) -> None:
    token = issuer.mint(act="patient", sub="portal-1", roles=["patient"], pat="p-2", loc=OMIT)
    sneaky = issuer.mint(act="patient", roles=["patient"], pat="p-2", loc=["*"])

    own = await client.get("/patients/p-2", headers=bearer(token))
    assert own.status_code == 200
    assert own.json()["categories"] == ["clinical", "contact", "demographics", "preferences"]
    assert (await client.get("/patients/p-1", headers=bearer(token))).status_code == 403
    assert (await client.get("/patients/p-1", headers=bearer(sneaky))).status_code == 403
    listing = "/orgs/org-1/locations/loc-2/patients"
    assert (await client.get(listing, headers=bearer(token))).status_code == 403


async def test_other_tenant_is_404_or_403(
    client: httpx.AsyncClient, issuer: TestTokenIssuer
) -> None:
    other_org = issuer.mint(org="org-2", roles=["org_admin"], loc=["*"])

    assert (await client.get("/patients/p-1", headers=bearer(other_org))).status_code == 404
    assert (await client.get("/patients/p-3", headers=bearer(other_org))).status_code == 200
    listing = "/orgs/org-1/locations/loc-1/patients"
    assert (await client.get(listing, headers=bearer(other_org))).status_code == 403


async def test_minimum_necessary_categories(
    client: httpx.AsyncClient, issuer: TestTokenIssuer
) -> None:
    billing = issuer.mint(roles=["billing"], loc=["*"])

    body = (await client.get("/patients/p-1", headers=bearer(billing))).json()

    assert body["categories"] == ["contact", "demographics"]


@pytest.mark.parametrize("role", ROLES)
async def test_role_permission_matrix_matches_the_table(
    client: httpx.AsyncClient, issuer: TestTokenIssuer, role: str
) -> None:
    extra: dict[str, Any] = {"act": "patient", "pat": "p-1"} if role == "patient" else {}
    token = issuer.mint(roles=[role], loc=["*"], **extra)

    for permission in PERMISSIONS:
        status = (await client.get(f"/check/{permission}", headers=bearer(token))).status_code
        assert status == (200 if allowed(role, permission) else 403), (role, permission)


async def test_unknown_role_is_denied_everything(
    client: httpx.AsyncClient, issuer: TestTokenIssuer
) -> None:
    token = issuer.mint(roles=["superuser"], loc=["*"])

    for permission in PERMISSIONS:
        assert (await client.get(f"/check/{permission}", headers=bearer(token))).status_code == 403


async def test_partner_scopes(client: httpx.AsyncClient, issuer: TestTokenIssuer) -> None:
    token = issuer.mint(act="partner", roles=[], loc=["*"], scope="patients:search")

    assert (await client.get("/check/patients:search", headers=bearer(token))).status_code == 200
    assert (await client.get("/check/patients:read", headers=bearer(token))).status_code == 403


async def test_partner_sees_only_the_categories_of_its_scope(
    client: httpx.AsyncClient, issuer: TestTokenIssuer
) -> None:
    token = issuer.mint(
        act="partner", sub="client-1", roles=[], loc=["loc-1"], scope="patients:read"
    )

    response = await client.get("/patients/p-1", headers=bearer(token))
    outside = await client.get("/patients/p-2", headers=bearer(token))

    assert response.status_code == 200
    assert response.json()["categories"] == ["contact", "demographics"]
    assert outside.status_code == 403


async def test_service_identity_holds_only_its_grants(
    client: httpx.AsyncClient, issuer: TestTokenIssuer
) -> None:
    messaging = issuer.mint(act="service", sub="service:messaging", roles=[], loc=["*"])
    unknown = issuer.mint(act="service", sub="service:reporting", roles=[], loc=["*"])
    not_a_service_subject = issuer.mint(act="service", sub="messaging", roles=[], loc=["*"])

    response = await client.get("/patients/p-2", headers=bearer(messaging))

    assert response.status_code == 200
    assert response.json()["categories"] == ["contact", "preferences"]
    assert (
        await client.get("/check/patients:search", headers=bearer(messaging))
    ).status_code == 403
    for token in (unknown, not_a_service_subject):
        assert (await client.get("/patients/p-2", headers=bearer(token))).status_code == 403


async def test_client_tokens_cannot_carry_roles(
    client: httpx.AsyncClient, issuer: TestTokenIssuer
) -> None:
    for act in ("partner", "service"):
        token = issuer.mint(act=act, sub="service:messaging", roles=["org_admin"], loc=["*"])
        assert (await client.get("/patients/p-1", headers=bearer(token))).status_code == 401


async def test_service_without_verifier_fails_closed(issuer: TestTokenIssuer) -> None:
    async with http(build_app(None)) as client:
        response = await client.get(
            "/patients/p-1", headers=bearer(issuer.mint(roles=["org_admin"]))
        )

    assert response.status_code == 500
    assert response.json()["type"].endswith("auth-not-configured")
    with pytest.raises(RuntimeError):
        ensure_token_verifier(SimpleNamespace(state={}))


def test_require_refuses_unknown_permissions() -> None:
    with pytest.raises(ValueError, match="unknown permission"):
        require("patients:delete")


def test_authenticated_principal_is_a_principal(issuer: TestTokenIssuer) -> None:
    principal = AuthenticatedPrincipal(
        actor_id="user-1", actor_type="user", org_id="org-1", roles=("provider",)
    )

    assert isinstance(principal, Principal)
    assert principal.purpose_of_use == "TREAT"
