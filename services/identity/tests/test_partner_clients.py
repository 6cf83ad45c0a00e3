"""Partner API clients and the OAuth token endpoint, against real PostgreSQL, Kafka and
OpenBao: registration by an org admin, the BAA rule, client credentials, rotation and
disabling that kill issued tokens, and the audit trail."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest
from aiokafka import ConsumerRecord
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from careloop_identity.settings import IdentitySettings
from careloop_identity.store.tables import metadata
from careloop_kit.auth import StaticJwksSource, TokenVerifier, permits, principal_from_claims
from careloop_kit.auth.tokens import Claims
from careloop_kit.clock import FrozenClock
from careloop_kit.db.migrate import alembic_config
from careloop_kit.testing.kafka import header, wait_for_records

from .accounts import SignedIn, org_admin
from .conftest import MIGRATIONS
from .test_service import login, make_account

pytestmark = pytest.mark.service

PROBLEM = "application/problem+json"
ACCESS = "careloop.audit.access.recorded.v1"
REVOKED = "careloop.identity.session.revoked.v1"


# --- helpers -------------------------------------------------------------------------


def today(clock: FrozenClock) -> date:
    return clock.now().date()


def current_baa(clock: FrozenClock, *, days_left: int = 365) -> dict[str, str]:
    return {
        "baa_signed_on": (today(clock) - timedelta(days=30)).isoformat(),
        "baa_expires_on": (today(clock) + timedelta(days=days_left)).isoformat(),
    }


def clients_url(org_id: str, *rest: str) -> str:
    return "/".join([f"/organizations/{org_id}/clients", *rest])


async def create_client(
    identity: httpx.AsyncClient, admin: SignedIn, **overrides: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "Acme EHR", "scopes": ["locations:read"], "locations": "*"}
    body.update(overrides)
    response = await identity.post(
        clients_url(admin.account.org_id), json=body, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def basic(client_id: str, secret: str) -> dict[str, str]:
    # RFC 6749 §2.3.1: each part is form-encoded before the Basic encoding.
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": f"Basic {base64.b64encode(raw).decode()}"}


async def token_by_basic(
    identity: httpx.AsyncClient, client: dict[str, Any], secret: str | None = None, **form: str
) -> httpx.Response:
    return await identity.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", **form},
        headers=basic(client["client_id"], secret or client["client_secret"]),
    )


async def token_by_form(
    identity: httpx.AsyncClient, client: dict[str, Any], **form: str
) -> httpx.Response:
    return await identity.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            **form,
        },
    )


async def verify(identity: httpx.AsyncClient, clock: FrozenClock, token: str) -> Claims:
    """What every service does: the kit's verifier with identity's published keys."""
    jwks = (await identity.get("/.well-known/jwks.json")).json()
    return await TokenVerifier(StaticJwksSource(jwks), clock=clock).verify(token)


def assert_oauth_problem(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["error"] == error
    assert response.json()["error_description"] == response.json()["detail"]


async def identity_records(
    settings: IdentitySettings, predicate: Callable[[list[dict[str, Any]]], bool]
) -> list[ConsumerRecord[bytes, bytes]]:
    def decoded(records: list[ConsumerRecord[bytes, bytes]]) -> list[dict[str, Any]]:
        return [{"type": header(r, "ce_type"), **json.loads(r.value)} for r in records]

    return await wait_for_records(
        settings.kafka_bootstrap,
        f"{settings.topic_prefix}careloop.identity",
        lambda records: predicate(decoded(records)),
    )


def events(records: list[ConsumerRecord[bytes, bytes]]) -> list[dict[str, Any]]:
    return [{"type": header(r, "ce_type"), **json.loads(r.value)} for r in records]


def audits_of(
    records: list[dict[str, Any]], resource_type: str, **fields: Any
) -> list[dict[str, Any]]:
    return [
        r
        for r in records
        if r["type"] == ACCESS
        and r["resource_type"] == resource_type
        and all(r.get(k) == v for k, v in fields.items())
    ]


# --- registration and the BAA rule ---------------------------------------------------


async def test_create_returns_the_secret_once_and_nothing_else_shows_it(
    identity: httpx.AsyncClient, identity_settings: IdentitySettings, clock: FrozenClock
) -> None:
    admin = await org_admin(identity, clock)
    created = await create_client(
        identity, admin, name="Acme EHR", locations=[admin.account.location_id]
    )
    secret = created["client_secret"]
    assert len(secret) >= 43
    assert created["org_id"] == admin.account.org_id
    assert created["scopes"] == ["locations:read"]
    assert created["locations"] == [admin.account.location_id]
    assert created["rate_limit_per_minute"] == 600  # the service default
    assert created["secret_version"] == 1
    assert created["baa_current"] is False
    assert created["disabled_at"] is None

    url = clients_url(admin.account.org_id, created["client_id"])
    read = await identity.get(url, headers=admin.headers)
    listed = await identity.get(clients_url(admin.account.org_id), headers=admin.headers)
    assert read.status_code == listed.status_code == 200
    assert read.json() == {k: v for k, v in created.items() if k != "client_secret"}
    assert [c["client_id"] for c in listed.json()["items"]] == [created["client_id"]]
    for response in (read, listed):
        assert "client_secret" not in response.text
        assert secret not in response.text
        assert "secret_hash" not in response.text

    engine = create_async_engine(identity_settings.database_url.get_secret_value())
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT * FROM partner_client WHERE id = :id"),
                    {"id": created["client_id"]},
                )
            ).one()
    finally:
        await engine.dispose()
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in json.dumps([str(value) for value in row])


async def test_a_phi_scope_needs_a_current_baa(
    identity: httpx.AsyncClient, clock: FrozenClock
) -> None:
    admin = await org_admin(identity, clock)
    url = clients_url(admin.account.org_id)
    day = today(clock)
    phi = {"name": "Billing house", "scopes": ["patients:read"], "locations": "*"}

    def baa(signed: int | None, expires: int | None = None) -> dict[str, str]:
        dates = {"baa_signed_on": signed, "baa_expires_on": expires}
        return {k: (day + timedelta(days=v)).isoformat() for k, v in dates.items() if v is not None}

    # none, lapsed, not signed yet, no end date
    for dates in (baa(None), baa(-400, -1), baa(1, 90), baa(-1)):
        refused = await identity.post(url, json={**phi, **dates}, headers=admin.headers)
        assert refused.status_code == 422, (dates, refused.text)
        assert refused.headers["content-type"] == PROBLEM
        assert refused.json()["type"].endswith("/baa-required")
        assert refused.json()["phi_scopes"] == ["patients:read"]
        assert "baa_expires_on" in refused.json()["detail"]

    accepted = await identity.post(url, json={**phi, **current_baa(clock)}, headers=admin.headers)
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["baa_current"] is True

    # Granting a PHI scope later is held to the same rule ...
    plain = await create_client(identity, admin)
    plain_url = clients_url(admin.account.org_id, plain["client_id"])
    more = {"scopes": ["locations:read", "patients:search"]}
    refused = await identity.patch(plain_url, json=more, headers=admin.headers)
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("/baa-required")
    # ... and passes when the signed BAA is recorded in the same request.
    granted = await identity.patch(
        plain_url, json={**more, **current_baa(clock)}, headers=admin.headers
    )
    assert granted.status_code == 200, granted.text
    assert granted.json()["scopes"] == ["locations:read", "patients:search"]
    assert granted.json()["baa_current"] is True


async def test_patch_changes_what_is_sent(identity: httpx.AsyncClient, clock: FrozenClock) -> None:
    admin = await org_admin(identity, clock)
    created = await create_client(identity, admin, rate_limit_per_minute=60, **current_baa(clock))
    url = clients_url(admin.account.org_id, created["client_id"])
    changed = await identity.patch(
        url,
        json={
            "name": "Acme EHR (prod)",
            "rate_limit_per_minute": 1200,
            "baa_expires_on": None,
            "baa_signed_on": None,
            "locations": [admin.account.location_id],
        },
        headers=admin.headers,
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["name"] == "Acme EHR (prod)"
    assert body["rate_limit_per_minute"] == 1200
    assert body["baa_signed_on"] is None
    assert body["baa_expires_on"] is None
    assert body["locations"] == [admin.account.location_id]
    assert body["scopes"] == ["locations:read"]
    assert body["updated_at"] >= created["updated_at"]
    assert "client_secret" not in body


# --- the token endpoint --------------------------------------------------------------


async def test_tokens_by_basic_and_by_form_carry_scopes_locations_and_rate_limit(
    identity: httpx.AsyncClient, clock: FrozenClock
) -> None:
    admin = await org_admin(identity, clock)
    client = await create_client(
        identity,
        admin,
        scopes=["patients:read", "locations:read"],
        locations=[admin.account.location_id],
        rate_limit_per_minute=120,
        **current_baa(clock),
    )

    by_basic = await token_by_basic(identity, client)

    assert by_basic.status_code == 200, by_basic.text
    assert by_basic.headers["cache-control"] == "no-store"
    assert by_basic.headers["pragma"] == "no-cache"
    body = by_basic.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "locations:read patients:read"
    assert "refresh_token" not in body
    claims = await verify(identity, clock, body["access_token"])
    assert claims.act == "partner"
    assert claims.sub == client["client_id"]
    assert claims.org == admin.account.org_id
    assert claims.roles == ()
    assert claims.loc == (admin.account.location_id,)
    assert claims.scope == "locations:read patients:read"
    assert claims.rate_limit == 120
    assert claims.sid == f"{client['client_id']}.1"
    assert claims.amr == ()
    assert claims.pat is None
    assert claims.exp - claims.iat == 300
    principal = principal_from_claims(claims, now=clock.now().timestamp())
    assert permits(principal, "patients:read")
    assert not permits(principal, "patients:update")

    by_form = await token_by_form(identity, client, scope="locations:read")

    assert by_form.status_code == 200, by_form.text
    assert by_form.json()["scope"] == "locations:read"
    narrow = principal_from_claims(await verify(identity, clock, by_form.json()["access_token"]))
    assert permits(narrow, "locations:read")
    assert not permits(narrow, "patients:read")

    not_granted = await token_by_form(identity, client, scope="patients:search")
    assert_oauth_problem(not_granted, 400, "invalid_scope")


async def test_after_the_baa_expires_tokens_carry_no_phi_scope(
    identity: httpx.AsyncClient, clock: FrozenClock
) -> None:
    admin = await org_admin(identity, clock)
    mixed = await create_client(
        identity,
        admin,
        scopes=["locations:read", "patients:read"],
        **current_baa(clock, days_left=2),
    )
    phi_only = await create_client(
        identity, admin, scopes=["patients:search"], **current_baa(clock, days_left=2)
    )
    assert (await token_by_basic(identity, mixed)).json()["scope"] == (
        "locations:read patients:read"
    )

    clock.advance(timedelta(days=3))

    lapsed = await token_by_basic(identity, mixed)
    assert lapsed.status_code == 200, lapsed.text
    assert lapsed.json()["scope"] == "locations:read"
    claims = await verify(identity, clock, lapsed.json()["access_token"])
    assert claims.scope == "locations:read"
    asked = await token_by_basic(identity, mixed, scope="patients:read")
    assert_oauth_problem(asked, 400, "invalid_scope")
    assert "business associate agreement" in asked.json()["detail"]
    assert_oauth_problem(await token_by_form(identity, phi_only), 400, "invalid_scope")


async def test_failed_client_authentication_is_401_invalid_client_and_audited(
    identity: httpx.AsyncClient, identity_settings: IdentitySettings, clock: FrozenClock
) -> None:
    admin = await org_admin(identity, clock)
    client = await create_client(identity, admin)
    grant = {"grant_type": "client_credentials"}

    wrong_secret = await token_by_basic(identity, client, secret="not-the-secret")
    wrong_form = await token_by_form(identity, {**client, "client_secret": "nope"})
    unknown = await token_by_basic(identity, {**client, "client_id": "no-such-client"})
    anonymous = await identity.post("/oauth/token", data=grant)
    garbled = await identity.post(
        "/oauth/token", data=grant, headers={"Authorization": "Basic !!not base64!!"}
    )
    for response in (wrong_secret, wrong_form, unknown, anonymous, garbled):
        assert_oauth_problem(response, 401, "invalid_client")
        assert response.headers["www-authenticate"] == 'Basic realm="careloop"'
        assert response.headers["cache-control"] == "no-store"
    # Unknown client and wrong secret read the same.
    assert unknown.json()["detail"] == wrong_secret.json()["detail"]

    disabled_client = await create_client(identity, admin, name="Retired partner")
    disabled = await identity.post(
        clients_url(admin.account.org_id, disabled_client["client_id"], "disable"),
        headers=admin.headers,
    )
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["disabled_at"] is not None
    assert_oauth_problem(await token_by_basic(identity, disabled_client), 401, "invalid_client")

    records = events(
        await identity_records(
            identity_settings,
            lambda rs: (
                len(audits_of(rs, "ClientToken", actor_type="partner", outcome="denied")) >= 6
            ),
        )
    )
    denied = audits_of(records, "ClientToken", actor_type="partner", outcome="denied")
    assert {(d["actor_id"], d["outcome_detail"]) for d in denied} == {
        (client["client_id"], "401 wrong client secret"),
        ("unknown", "401 unknown client"),
        ("unknown", "401 no client credentials"),
        (disabled_client["client_id"], "401 client disabled"),
    }
    assert all(d["action"] == "create" and d["phi_categories"] == [] for d in denied)
    everything = json.dumps(records)
    assert client["client_secret"] not in everything
    assert "no-such-client" not in everything  # a presented id is not recorded


async def test_malformed_token_requests_are_400(
    identity: httpx.AsyncClient, clock: FrozenClock
) -> None:
    admin = await org_admin(identity, clock)
    client = await create_client(identity, admin)
    as_json = await identity.post("/oauth/token", json={"grant_type": "client_credentials"})
    no_grant = await identity.post("/oauth/token", data={"scope": "locations:read"})
    password = await identity.post(
        "/oauth/token", data={"grant_type": "password", "username": "a", "password": "b"}
    )
    twice = await identity.post(
        "/oauth/token",
        content="grant_type=client_credentials&grant_type=client_credentials",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    both_methods = await identity.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_secret": client["client_secret"]},
        headers=basic(client["client_id"], client["client_secret"]),
    )
    no_assertion = await identity.post(
        "/oauth/token", data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"}
    )
    assert_oauth_problem(as_json, 400, "invalid_request")
    assert_oauth_problem(no_grant, 400, "invalid_request")
    assert_oauth_problem(password, 400, "unsupported_grant_type")
    assert_oauth_problem(twice, 400, "invalid_request")
    assert_oauth_problem(both_methods, 400, "invalid_request")
    assert_oauth_problem(no_assertion, 400, "invalid_request")


# --- rotation and disabling end issued tokens ----------------------------------------


async def test_rotation_kills_the_old_secret_and_its_tokens(
    identity: httpx.AsyncClient, identity_settings: IdentitySettings, clock: FrozenClock
) -> None:
    admin = await org_admin(identity, clock)
    client = await create_client(identity, admin)
    old_token = (await token_by_basic(identity, client)).json()["access_token"]
    old_sid = (await verify(identity, clock, old_token)).sid
    # A partner token is a valid token here, just without the permission to manage.
    listing = clients_url(admin.account.org_id)
    before = await identity.get(listing, headers={"Authorization": f"Bearer {old_token}"})
    assert before.status_code == 403

    rotated = await identity.post(
        clients_url(admin.account.org_id, client["client_id"], "secret"), headers=admin.headers
    )

    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["client_secret"]
    assert new_secret != client["client_secret"]
    assert rotated.json()["secret_version"] == 2
    assert_oauth_problem(await token_by_basic(identity, client), 401, "invalid_client")
    fresh = await token_by_basic(identity, client, secret=new_secret)
    assert fresh.status_code == 200, fresh.text
    assert (await verify(identity, clock, fresh.json()["access_token"])).sid == (
        f"{client['client_id']}.2"
    )
    # The old token is dead on this replica at once ...
    after = await identity.get(listing, headers={"Authorization": f"Bearer {old_token}"})
    assert after.status_code == 401
    # ... and everywhere else through the announced revocation.
    records = events(
        await identity_records(identity_settings, lambda rs: any(r["type"] == REVOKED for r in rs))
    )
    revoked = [r for r in records if r["type"] == REVOKED]
    assert len(revoked) == 1
    assert revoked[0]["session_id"] == old_sid
    assert revoked[0]["user_id"] == client["client_id"]
    assert revoked[0]["org_id"] == admin.account.org_id
    assert revoked[0]["reason"] == "admin"
    assert client["client_secret"] not in json.dumps(records)
    assert new_secret not in json.dumps(records)


async def test_disabling_revokes_the_current_tokens_once(
    identity: httpx.AsyncClient, identity_settings: IdentitySettings, clock: FrozenClock
) -> None:
    admin = await org_admin(identity, clock)
    client = await create_client(identity, admin)
    token = (await token_by_form(identity, client)).json()["access_token"]
    url = clients_url(admin.account.org_id, client["client_id"])

    first = await identity.post(f"{url}/disable", headers=admin.headers)
    again = await identity.post(f"{url}/disable", headers=admin.headers)

    assert first.status_code == again.status_code == 200
    assert again.json()["disabled_at"] == first.json()["disabled_at"]
    listing = clients_url(admin.account.org_id)
    assert (
        await identity.get(listing, headers={"Authorization": f"Bearer {token}"})
    ).status_code == 401
    rotate = await identity.post(f"{url}/secret", headers=admin.headers)
    assert rotate.status_code == 409
    records = events(
        await identity_records(identity_settings, lambda rs: any(r["type"] == REVOKED for r in rs))
    )
    revoked = [r for r in records if r["type"] == REVOKED]
    assert [(r["session_id"], r["reason"]) for r in revoked] == [
        (f"{client['client_id']}.1", "admin")
    ]


# --- who may manage clients ----------------------------------------------------------


async def test_only_the_organizations_admin_with_mfa_manages_its_clients(
    identity: httpx.AsyncClient, clock: FrozenClock
) -> None:
    admin = await org_admin(identity, clock)
    client = await create_client(identity, admin)
    org = admin.account.org_id
    body = {"name": "X", "scopes": ["locations:read"], "locations": "*"}

    desk = await make_account(identity, ["front_desk"], clock=clock, marker="desk")
    desk_token = (await login(identity, desk)).json()["access_token"]
    desk_headers = {"Authorization": f"Bearer {desk_token}"}
    no_mfa = await make_account(identity, ["org_admin"], clock=clock, marker="nomfa")
    no_mfa_token = (await login(identity, no_mfa)).json()["access_token"]
    no_mfa_headers = {"Authorization": f"Bearer {no_mfa_token}"}
    other = await org_admin(identity, clock, marker="other")

    for headers, org_id in ((desk_headers, desk.org_id), (no_mfa_headers, no_mfa.org_id)):
        assert (await identity.get(clients_url(org_id), headers=headers)).status_code == 403
        created = await identity.post(clients_url(org_id), json=body, headers=headers)
        assert created.status_code == 403
        assert created.headers["content-type"] == PROBLEM
    refused = await identity.get(clients_url(no_mfa.org_id), headers=no_mfa_headers)
    assert refused.json()["type"].endswith("/mfa-required")

    # Another organization's admin reaches nothing of this one ...
    for response in (
        await identity.get(clients_url(org), headers=other.headers),
        await identity.post(clients_url(org), json=body, headers=other.headers),
        await identity.get(clients_url(org, client["client_id"]), headers=other.headers),
        await identity.post(clients_url(org, client["client_id"], "secret"), headers=other.headers),
        await identity.post(
            clients_url(org, client["client_id"], "disable"), headers=other.headers
        ),
    ):
        assert response.status_code == 404, response.text
    # ... nor through its own organization's path.
    sideways = clients_url(other.account.org_id, client["client_id"])
    assert (await identity.get(sideways, headers=other.headers)).status_code == 404
    assert (
        await identity.patch(sideways, json={"name": "Y"}, headers=other.headers)
    ).status_code == 404

    assert (await identity.get(clients_url(org))).status_code == 401
    # The client still works: none of the refused calls changed it.
    assert (await token_by_basic(identity, client)).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"scopes": ["patients:merge"]},
        {"scopes": ["users:manage"]},
        {"scopes": ["clients:manage"]},
        {"scopes": []},
        {"scopes": ["not a scope"]},
        {"locations": ["no-such-location"]},
        {"locations": ["*", "LOCATION"]},
        {"locations": []},
        {"locations": "everywhere"},
        {"rate_limit_per_minute": 0},
        {"rate_limit_per_minute": 1_000_001},
        {"baa_signed_on": "2030-01-10", "baa_expires_on": "2030-01-01"},
        {"baa_expires_on": "2099-01-01"},
        {"name": ""},
        {"client_secret": "chosen-by-me"},
    ],
)
async def test_invalid_registrations_are_422_problems(
    identity: httpx.AsyncClient, clock: FrozenClock, body: dict[str, Any]
) -> None:
    admin = await org_admin(identity, clock)
    full: dict[str, Any] = {"name": "Acme", "scopes": ["locations:read"], "locations": "*"}
    full.update(body)
    if full["locations"] == ["*", "LOCATION"]:
        full["locations"] = ["*", admin.account.location_id]
    response = await identity.post(
        clients_url(admin.account.org_id), json=full, headers=admin.headers
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM


async def test_invalid_changes_are_422_problems(
    identity: httpx.AsyncClient, clock: FrozenClock
) -> None:
    admin = await org_admin(identity, clock)
    client = await create_client(identity, admin)
    url = clients_url(admin.account.org_id, client["client_id"])
    for body in (
        {"name": None},
        {"scopes": None},
        {"scopes": ["audit:read"]},
        {"locations": ["elsewhere"]},
        {"baa_expires_on": "2099-01-01"},
        {"client_secret": "x"},
    ):
        response = await identity.patch(url, json=body, headers=admin.headers)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == PROBLEM
    missing = await identity.patch(
        clients_url(admin.account.org_id, "no-such-client"), json={}, headers=admin.headers
    )
    assert missing.status_code == 404


# --- audit ---------------------------------------------------------------------------


async def test_every_change_and_every_token_is_audited_without_secrets(
    identity: httpx.AsyncClient, identity_settings: IdentitySettings, clock: FrozenClock
) -> None:
    admin = await org_admin(identity, clock)
    client = await create_client(identity, admin)
    url = clients_url(admin.account.org_id, client["client_id"])
    assert (
        await identity.patch(url, json={"name": "Renamed"}, headers=admin.headers)
    ).status_code == 200
    # Sending what is already there changes nothing, and records nothing.
    assert (
        await identity.patch(url, json={"name": "Renamed"}, headers=admin.headers)
    ).status_code == 200
    issued = await token_by_basic(identity, client)
    assert issued.status_code == 200
    sid = f"{client['client_id']}.1"
    rotated = await identity.post(f"{url}/secret", headers=admin.headers)
    assert (await identity.post(f"{url}/disable", headers=admin.headers)).status_code == 200

    records = events(
        await identity_records(
            identity_settings,
            lambda rs: (
                len(audits_of(rs, "Client", resource_id=client["client_id"])) >= 4
                and len(audits_of(rs, "ClientToken", resource_id=sid)) >= 1
            ),
        )
    )
    changes = audits_of(records, "Client", resource_id=client["client_id"])
    admin_id = admin.account.user_id
    assert [(c["action"], c["outcome_detail"]) for c in changes] == [
        ("create", "scopes=locations:read"),
        ("update", "changed: name"),
        ("update", "secret rotated to version 2"),
        ("update", "disabled"),
    ]
    assert all(
        c["actor_id"] == admin_id
        and c["actor_type"] == "user"
        and c["outcome"] == "success"
        and c["org_id"] == admin.account.org_id
        and c["phi_categories"] == []
        for c in changes
    )
    (token_audit,) = audits_of(records, "ClientToken", resource_id=sid)
    assert token_audit["actor_id"] == client["client_id"]
    assert token_audit["actor_type"] == "partner"
    assert token_audit["action"] == "create"
    assert token_audit["outcome"] == "success"
    assert token_audit["outcome_detail"] == "scope=locations:read"
    everything = json.dumps(records)
    assert client["client_secret"] not in everything
    assert rotated.json()["client_secret"] not in everything
    assert issued.json()["access_token"] not in everything


# --- schema --------------------------------------------------------------------------


async def test_the_migration_matches_the_table(identity_settings: IdentitySettings) -> None:
    dsn = identity_settings.database_url.get_secret_value()
    heads = ScriptDirectory.from_config(alembic_config(MIGRATIONS, dsn)).get_heads()
    assert len(heads) == 1  # one line of history
    engine = create_async_engine(dsn)
    try:
        async with engine.connect() as conn:

            def inspect(sync_conn: Any) -> tuple[str | None, list[Any]]:
                context = MigrationContext.configure(sync_conn)
                return context.get_current_revision(), compare_metadata(context, metadata)

            current, diff = await conn.run_sync(inspect)
    finally:
        await engine.dispose()
    assert current == heads[0]
    assert [d for d in diff if "partner_client" in repr(d)] == []
