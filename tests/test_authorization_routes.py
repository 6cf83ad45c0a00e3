"""Deny by default: every route of every service is covered by an authorization
dependency (`careloop_kit.auth.require(permission)`), unless it is public by design
and listed below with the reason.

The apps are built without starting their lifespans (no database, broker or Vault).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from careloop_cli.registry import SERVICES
from careloop_kit.auth import PERMISSIONS, require, required_permission

pytestmark = pytest.mark.unit

# Served by FastAPI itself or by the kit for every service: no PHI, no tenant data.
FRAMEWORK_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"}
)

# Routes that are public by design, per service: (method, path).
PUBLIC_BY_DESIGN: dict[str, frozenset[tuple[str, str]]] = {
    "patients": frozenset(),
    "audit": frozenset(),
    "scheduling": frozenset(),
    "referrals": frozenset(),
    "tasks": frozenset(),
    "caregaps": frozenset(),
    "messaging": frozenset(
        {
            # Twilio's delivery status callbacks and incoming SMS (STOP / START): Twilio
            # cannot hold a bearer token, so each request is authenticated by its
            # X-Twilio-Signature (HMAC under the account's auth token over the public URL
            # and the form) instead; a bad or missing signature gets 403 before anything
            # in the form is used.
            ("POST", "/webhooks/twilio/status"),
            ("POST", "/webhooks/twilio/inbound"),
            # Secure one-time links in patients' messages: the patient taps a link and
            # holds no access token; the token in the path is the credential (message id
            # + HMAC under messaging's Vault key, checked in constant time; every bad
            # token gets the same 404). GET only shows what an SMS may say; POST acts once.
            ("GET", "/links/{token}"),
            ("POST", "/links/{token}"),
        }
    ),
    "identity": frozenset(
        {
            # Signing in and out: the caller has no access token yet (or its
            # refresh token is the credential); logout takes the token it ends.
            ("POST", "/auth/login"),
            ("POST", "/auth/refresh"),
            ("POST", "/auth/logout"),
            # MFA enrollment and verification take the caller's access token
            # themselves: a user who must enroll has no MFA-backed token yet.
            ("POST", "/auth/mfa/enroll"),
            ("POST", "/auth/mfa/verify"),
            # Emergency access takes the caller's access token itself and checks the
            # provider role and otp in amr (403 otherwise, audited).
            ("POST", "/auth/break-glass"),
            # Public keys: every verifier must be able to read them.
            ("GET", "/.well-known/jwks.json"),
            # The OAuth token endpoint: partner clients and services authenticate
            # with their own credential (client secret, or a Vault-signed assertion).
            ("POST", "/oauth/token"),
            # Creating and listing tenants is the platform operator's: guarded by the
            # X-Bootstrap-Token header (`require_bootstrap_token`), not by a tenant's
            # token. Everything inside an organization requires a permission.
            ("POST", "/organizations"),
            ("GET", "/organizations"),
        }
    ),
    "gateway": frozenset(
        # The gateway authenticates in its own way: the proxy verifies the token of
        # every request before forwarding it, and the service behind it enforces
        # its permissions again. The merged API docs are public.
        {("GET", "/api/v1/openapi.json"), ("GET", "/api/v1/docs")}
        | {
            (method, "/api/v1/{service}/{path:path}")
            for method in ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
        }
    ),
}


def build_app(name: str) -> FastAPI:
    entry = SERVICES[name]
    app: FastAPI = entry.app_factory()(entry.settings_class()())
    return app


def api_routes(app: FastAPI) -> Iterator[tuple[str, str, Dependant]]:
    """(method, path, dependant) of every API route; FastAPI includes routers lazily,
    so walk the effective routes rather than `app.routes`."""
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute):
            continue
        dependant: Dependant = route.dependant
        for method in sorted(route.methods or ()):
            yield method, route.path or "", dependant


def permissions_in(dependant: Dependant) -> set[str]:
    """Every permission a `require(...)` dependency enforces anywhere in the tree."""
    found: set[str] = set()
    stack: list[Any] = [dependant]
    while stack:
        node = stack.pop()
        permission = required_permission(node.call)
        if permission is not None:
            found.add(permission)
        stack.extend(node.dependencies)
    return found


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_route_has_an_authorization_dependency(service: str) -> None:
    app = build_app(service)
    public = PUBLIC_BY_DESIGN[service]
    unguarded = []
    seen = 0
    for method, path, dependant in api_routes(app):
        if path in FRAMEWORK_PATHS:
            continue
        seen += 1
        permissions = permissions_in(dependant)
        assert permissions <= set(PERMISSIONS), (service, method, path, permissions)
        if not permissions and (method, path) not in public:
            unguarded.append(f"{method} {path}")
    assert seen, f"{service} has no routes to check"
    assert unguarded == [], f"{service}: routes without require(permission): {unguarded}"


def test_the_phi_services_need_the_expected_permissions() -> None:
    expected = {
        "patients": {
            ("POST", "/patients"): {"patients:create"},
            ("GET", "/patients/{patient_id}"): {"patients:read"},
            ("PATCH", "/patients/{patient_id}"): {"patients:update"},
            ("GET", "/patients"): {"patients:search"},
            ("POST", "/patients/_search"): {"patients:search"},
            ("POST", "/patients/{patient_id}/merge"): {"patients:merge"},
            ("POST", "/patients/{patient_id}/facts"): {"patients:update"},
            ("GET", "/patients/{patient_id}/facts"): {"patients:read"},
            ("GET", "/patients/{patient_id}/facts/{fact_id}"): {"patients:read"},
            ("POST", "/patients/{patient_id}/facts/{fact_id}/entered-in-error"): {
                "patients:update"
            },
        },
        "audit": {
            ("GET", "/audit/patients/{patient_id}/trail"): {"audit:read"},
            ("GET", "/audit/events"): {"audit:read"},
            ("GET", "/audit/events/{audit_id}/fhir"): {"audit:read"},
            ("POST", "/audit/verify"): {"audit:verify"},
        },
        "referrals": {
            ("POST", "/referrals"): {"referrals:create"},
            ("POST", "/referrals/packets"): {"referrals:create"},
            ("GET", "/referrals/{referral_id}/documents/{document_id}"): {"referrals:read"},
            ("GET", "/referrals"): {"referrals:read"},
            ("GET", "/referrals/figures"): {"referrals:read"},
            ("GET", "/referrals/{referral_id}"): {"referrals:read"},
            ("POST", "/referrals/{referral_id}/transitions"): {"referrals:update"},
            ("PUT", "/referrals/{referral_id}/authorization"): {"referrals:update"},
            ("POST", "/referrals/{referral_id}/outcome"): {"referrals:update"},
            ("GET", "/referrals/clocks"): {"referrals:read"},
            ("PUT", "/referrals/clocks"): {"referrals:manage"},
            ("POST", "/referrals/directory"): {"referrals:manage"},
            ("GET", "/referrals/directory"): {"referrals:read"},
            ("GET", "/referrals/directory/{entry_id}"): {"referrals:read"},
            ("PATCH", "/referrals/directory/{entry_id}"): {"referrals:manage"},
        },
        "tasks": {
            ("POST", "/tasks"): {"tasks:update"},
            ("GET", "/tasks"): {"tasks:read"},
            ("GET", "/tasks/counts"): {"tasks:read"},
            ("GET", "/tasks/{task_id}"): {"tasks:read"},
            ("POST", "/tasks/{task_id}/claim"): {"tasks:update"},
            ("POST", "/tasks/{task_id}/assign"): {"tasks:update"},
            ("POST", "/tasks/{task_id}/comments"): {"tasks:update"},
            ("POST", "/tasks/{task_id}/complete"): {"tasks:update"},
            ("POST", "/tasks/{task_id}/cancel"): {"tasks:update"},
            ("GET", "/tasks/rules"): {"tasks:manage"},
            ("PUT", "/tasks/rules"): {"tasks:manage"},
            ("GET", "/tasks/queues/{role}/{location_id}/members"): {"tasks:manage"},
            ("PUT", "/tasks/queues/{role}/{location_id}/members/{user_id}"): {"tasks:manage"},
            ("DELETE", "/tasks/queues/{role}/{location_id}/members/{user_id}"): {"tasks:manage"},
        },
        "caregaps": {
            ("GET", "/patients/{patient_id}/gaps"): {"caregaps:read"},
            ("GET", "/gaps/{gap_id}"): {"caregaps:read"},
            ("POST", "/gaps/{gap_id}/decline"): {"caregaps:update"},
            ("POST", "/gaps/{gap_id}/exclude"): {"caregaps:update"},
            ("POST", "/gaps/{gap_id}/reopen"): {"caregaps:update"},
            ("GET", "/population"): {"caregaps:read"},
            ("GET", "/population/export.csv"): {"caregaps:read"},
            ("GET", "/measures"): {"caregaps:read"},
            ("PUT", "/measures/{measure_id}/visit-types"): {"caregaps:manage"},
            ("POST", "/evaluations"): {"caregaps:manage"},
            ("GET", "/evaluations/{job_id}"): {"caregaps:manage"},
            ("POST", "/campaigns"): {"caregaps:manage"},
            ("GET", "/campaigns"): {"caregaps:read"},
            ("GET", "/campaigns/{campaign_id}"): {"caregaps:read"},
            ("POST", "/campaigns/{campaign_id}/launch"): {"caregaps:manage"},
            ("POST", "/campaigns/{campaign_id}/stop"): {"caregaps:manage"},
        },
    }
    for service, routes in expected.items():
        found = {
            (method, path): permissions_in(dependant)
            for method, path, dependant in api_routes(build_app(service))
            if path not in FRAMEWORK_PATHS
        }
        assert found == routes, service


def test_messaging_templates_and_inbox_need_the_expected_permissions() -> None:
    expected = {
        ("GET", "/templates"): {"templates:read"},
        ("GET", "/templates/{kind}/{channel}/{language}"): {"templates:read"},
        ("GET", "/templates/{kind}/{channel}/{language}/versions"): {"templates:read"},
        ("PUT", "/templates/{kind}/{channel}/{language}"): {"templates:manage"},
        ("DELETE", "/templates/{kind}/{channel}/{language}"): {"templates:manage"},
        ("POST", "/templates/{kind}/{channel}/{language}/preview"): {"templates:manage"},
        ("GET", "/inbox"): {"messages:read"},
        ("GET", "/inbox/{item_id}"): {"messages:read"},
        ("GET", "/patients/{patient_id}/inbox"): {"messages:read"},
    }
    found = {
        (method, path): permissions_in(dependant)
        for method, path, dependant in api_routes(build_app("messaging"))
        if (method, path) in expected
    }
    assert found == expected


def test_the_walk_recognises_a_missing_dependency() -> None:
    router = APIRouter()

    @router.get("/open")
    async def open_route() -> None:
        return None

    @router.get("/guarded")
    async def guarded(principal: Annotated[Any, Depends(require("patients:read"))]) -> None:
        return None

    app = FastAPI()
    app.include_router(router)
    found = {path: permissions_in(d) for _, path, d in api_routes(app)}
    assert found["/open"] == set()
    assert found["/guarded"] == {"patients:read"}
