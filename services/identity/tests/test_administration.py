"""Administration inside an organization takes its admins' access tokens (with a second
factor), scoped to their own tenant; role changes end sessions and are announced and
audited; the last org admin cannot be demoted."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from careloop_identity.settings import IdentitySettings
from careloop_kit.clock import FrozenClock
from careloop_kit.testing.kafka import header, wait_for_records

from .conftest import ADMIN
from .test_service import PASSWORD, first_admin, login, make_account

pytestmark = pytest.mark.service

ROLES_CHANGED = "careloop.identity.user.roles_changed.v1"
REVOKED = "careloop.identity.session.revoked.v1"
ACCESS = "careloop.audit.access.recorded.v1"


def user_body(email: str, roles: list[str], locations: list[str] | str) -> dict[str, Any]:
    return {
        "email": email,
        "display_name": "Sam Lee",
        "password": PASSWORD,
        "roles": roles,
        "locations": locations,
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_tenant_creation_is_the_operators_and_everything_else_needs_a_token(
    identity: httpx.AsyncClient, clock: FrozenClock
) -> None:
    admin = await first_admin(identity, clock)

    no_bootstrap = await identity.post("/organizations", json={"name": "X"})
    with_admin_token = await identity.post(
        "/organizations", json={"name": "X"}, headers=admin.headers
    )
    bootstrap_on_users = await identity.post(
        f"/organizations/{admin.org_id}/users",
        json=user_body("a@example.org", ["billing"], "*"),
        headers=ADMIN,
    )
    weak_admin = await identity.post(
        "/organizations",
        json={
            "name": "Y",
            "admin": {"email": "y@example.org", "display_name": "Y", "password": "short"},
        },
        headers=ADMIN,
    )

    assert no_bootstrap.status_code == 401
    assert with_admin_token.status_code == 401
    assert bootstrap_on_users.status_code == 401
    assert bootstrap_on_users.headers["content-type"] == "application/problem+json"
    assert weak_admin.status_code == 422
    # The organization of a refused first admin is not left behind half-made.
    names = [
        o["name"] for o in (await identity.get("/organizations", headers=ADMIN)).json()["items"]
    ]
    assert "Y" not in names


async def test_managing_needs_the_permission_the_second_factor_and_the_own_tenant(
    identity: httpx.AsyncClient, clock: FrozenClock
) -> None:
    account = await make_account(identity, ["front_desk"], clock=clock, marker="desk")
    other = await first_admin(identity, clock)
    desk = (await login(identity, account)).json()["access_token"]
    admin_without_otp = (
        await identity.post(
            "/auth/login",
            json={"org_id": account.org_id, "email": account.admin.email, "password": PASSWORD},
        )
    ).json()
    new_user = user_body("new@example.org", ["billing"], "*")
    users = f"/organizations/{account.org_id}/users"

    by_desk = await identity.post(users, json=new_user, headers=bearer(desk))
    desk_reads_locations = await identity.get(
        f"/organizations/{account.org_id}/locations", headers=bearer(desk)
    )
    by_other_tenant = await identity.post(users, json=new_user, headers=other.headers)
    other_reads = await identity.get(f"/organizations/{account.org_id}", headers=other.headers)

    assert by_desk.status_code == 403
    assert desk_reads_locations.status_code == 200
    assert by_other_tenant.status_code == 404
    assert other_reads.status_code == 404
    # An org admin whose TOTP is enrolled must use it to sign in at all.
    assert admin_without_otp.get("mfa_required") is True
    created = await identity.post(users, json=new_user, headers=account.admin.headers)
    assert created.status_code == 201, created.text


async def test_role_change_ends_sessions_is_announced_and_audited(
    identity: httpx.AsyncClient, clock: FrozenClock, identity_settings: IdentitySettings
) -> None:
    account = await make_account(identity, ["front_desk"], clock=clock, marker="change")
    tokens = (await login(identity, account)).json()
    path = f"/organizations/{account.org_id}/users/{account.user_id}/roles"

    changed = await identity.put(
        path,
        json={"roles": ["billing", "front_desk"], "locations": "*"},
        headers=account.admin.headers,
    )
    refreshed = await identity.post(
        "/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    again = await login(identity, account)

    assert changed.status_code == 200, changed.text
    assert changed.json()["roles"] == ["billing", "front_desk"]
    assert changed.json()["locations"] == ["*"]
    assert refreshed.status_code == 401
    assert again.status_code == 200
    records = await wait_for_records(
        identity_settings.kafka_bootstrap,
        f"{identity_settings.topic_prefix}careloop.identity",
        lambda rs: any(header(r, "ce_type") == ROLES_CHANGED for r in rs),
    )
    events = [(header(r, "ce_type"), json.loads(r.value)) for r in records]
    (announced,) = [p for kind, p in events if kind == ROLES_CHANGED]
    assert announced["user_id"] == account.user_id
    assert announced["changed_by"] == account.admin.user_id
    assert announced["roles_before"] == ["front_desk"]
    assert announced["roles_after"] == ["billing", "front_desk"]
    assert announced["locations_before"] == [account.location_id]
    assert announced["locations_after"] == ["*"]
    assert announced["sessions_ended"] == 1
    revoked = [p for kind, p in events if kind == REVOKED and p["user_id"] == account.user_id]
    assert [p["reason"] for p in revoked] == ["admin"]
    audited = [
        p
        for kind, p in events
        if kind == ACCESS
        and p["resource_type"] == "User"
        and p["action"] == "update"
        and p["resource_id"] == account.user_id
    ]
    assert len(audited) == 1
    assert audited[0]["actor_id"] == account.admin.user_id
    assert audited[0]["outcome"] == "success"


async def test_invalid_role_changes_are_refused(
    identity: httpx.AsyncClient, clock: FrozenClock
) -> None:
    account = await make_account(identity, ["front_desk"], clock=clock, marker="bad")
    path = f"/organizations/{account.org_id}/users/{account.user_id}/roles"
    admin_path = f"/organizations/{account.org_id}/users/{account.admin.user_id}/roles"

    unknown_location = await identity.put(
        path, json={"roles": ["billing"], "locations": ["nowhere"]}, headers=account.admin.headers
    )
    to_patient = await identity.put(
        path,
        json={"roles": ["patient"], "locations": "*", "patient_id": "pat-1"},
        headers=account.admin.headers,
    )
    unknown_user = await identity.put(
        f"/organizations/{account.org_id}/users/nobody/roles",
        json={"roles": ["billing"], "locations": "*"},
        headers=account.admin.headers,
    )
    demote_last_admin = await identity.put(
        admin_path, json={"roles": ["billing"], "locations": "*"}, headers=account.admin.headers
    )

    assert unknown_location.status_code == 422
    assert to_patient.status_code == 403
    assert unknown_user.status_code == 404
    assert demote_last_admin.status_code == 409
    assert "last org admin" in demote_last_admin.json()["detail"]
    promoted = await identity.put(
        path, json={"roles": ["org_admin"], "locations": "*"}, headers=account.admin.headers
    )
    assert promoted.status_code == 200
    demoted = await identity.put(
        admin_path, json={"roles": ["billing"], "locations": "*"}, headers=account.admin.headers
    )
    assert demoted.status_code == 200
    # The demoted admin's session ended with the change.
    after = await identity.get(
        f"/organizations/{account.org_id}/users", headers=account.admin.headers
    )
    assert after.status_code == 401


async def test_location_managers_see_only_their_locations_accounts(
    identity: httpx.AsyncClient, clock: FrozenClock
) -> None:
    account = await make_account(identity, ["location_manager"], clock=clock, marker="lm")
    admin = account.admin.headers
    org = account.org_id
    second = await identity.post(
        f"/organizations/{org}/locations",
        json={"name": "South", "time_zone": "America/New_York"},
        headers=admin,
    )
    assert second.status_code == 201, second.text
    here = await identity.post(
        f"/organizations/{org}/users",
        json=user_body("here@example.org", ["front_desk"], [account.location_id]),
        headers=admin,
    )
    there = await identity.post(
        f"/organizations/{org}/users",
        json=user_body("there@example.org", ["front_desk"], [second.json()["id"]]),
        headers=admin,
    )
    manager = (await login(identity, account)).json()["access_token"]

    listed = await identity.get(f"/organizations/{org}/users", headers=bearer(manager))
    read_there = await identity.get(
        f"/organizations/{org}/users/{there.json()['id']}", headers=bearer(manager)
    )
    read_here = await identity.get(
        f"/organizations/{org}/users/{here.json()['id']}", headers=bearer(manager)
    )
    everyone = await identity.get(f"/organizations/{org}/users", headers=admin)

    assert listed.status_code == 200
    assert {u["email"] for u in listed.json()["items"]} == {"here@example.org", "lm@example.org"}
    assert read_there.status_code == 404
    assert read_here.status_code == 200
    assert {u["email"] for u in everyone.json()["items"]} >= {
        "here@example.org",
        "there@example.org",
        "lm@example.org",
        account.admin.email,
    }


async def test_feature_switches_change_one_at_a_time(
    identity: httpx.AsyncClient, clock: FrozenClock
) -> None:
    account = await make_account(identity, ["front_desk"], clock=clock, marker="feat")
    path = f"/organizations/{account.org_id}/locations/{account.location_id}"

    changed = await identity.patch(
        path,
        json={"features": {"referrals": True}, "sensitive": True},
        headers=account.admin.headers,
    )
    missing = await identity.patch(
        f"/organizations/{account.org_id}/locations/nowhere",
        json={"name": "Z"},
        headers=account.admin.headers,
    )

    assert changed.status_code == 200, changed.text
    assert changed.json()["features"] == {"reminders": True, "referrals": True}
    assert changed.json()["sensitive"] is True
    assert missing.status_code == 404


LOCATION_CREATED = "careloop.identity.location.created.v1"
LOCATION_CHANGED = "careloop.identity.location.changed.v1"


async def test_locations_are_announced_with_their_whole_state(
    identity: httpx.AsyncClient, identity_settings: IdentitySettings, clock: FrozenClock
) -> None:
    account = await make_account(identity, ["front_desk"], clock=clock, marker="locev")
    org = account.org_id
    created = await identity.post(
        f"/organizations/{org}/locations",
        json={"name": "Harbor Counseling", "time_zone": "America/Denver", "sensitive": True},
        headers=account.admin.headers,
    )
    location_id = created.json()["id"]
    changed = await identity.patch(
        f"/organizations/{org}/locations/{location_id}",
        json={"time_zone": "America/Phoenix", "features": {"waitlist": False}},
        headers=account.admin.headers,
    )
    bad_zone = await identity.patch(
        f"/organizations/{org}/locations/{location_id}",
        json={"time_zone": "Mars/Olympus"},
        headers=account.admin.headers,
    )

    assert created.status_code == 201, created.text
    assert changed.status_code == 200, changed.text
    assert changed.json()["time_zone"] == "America/Phoenix"
    assert bad_zone.status_code == 422
    records = await wait_for_records(
        identity_settings.kafka_bootstrap,
        f"{identity_settings.topic_prefix}careloop.identity",
        lambda rs: any(
            header(r, "ce_type") == LOCATION_CHANGED and r.key == location_id.encode() for r in rs
        ),
    )
    mine = [
        (header(r, "ce_type"), json.loads(r.value))
        for r in records
        if r.key == location_id.encode()
    ]
    assert [kind for kind, _ in mine] == [LOCATION_CREATED, LOCATION_CHANGED]
    (_, first), (_, second) = mine
    assert first["org_id"] == org
    assert first["name"] == "Harbor Counseling"
    assert first["time_zone"] == "America/Denver"
    assert first["sensitive"] is True
    assert first["features"] == {}
    assert "address" not in first
    assert second["time_zone"] == "America/Phoenix"
    assert second["sensitive"] is True
    assert second["features"] == {"waitlist": False}
