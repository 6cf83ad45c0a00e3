"""The identity service against real PostgreSQL, Kafka and OpenBao."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import hvac
import jwt
import pytest

from careloop_identity.app import create_app
from careloop_identity.settings import IdentitySettings
from careloop_kit.auth import totp
from careloop_kit.clock import FrozenClock
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.kafka import header, read_topic, wait_for_records

from .conftest import ADMIN

pytestmark = pytest.mark.service

PASSWORD = "Correct horse 42 battery"
SIGNING_KEY = "careloop-identity-signing"


@dataclass
class Account:
    org_id: str
    user_id: str
    email: str
    location_id: str
    admin: Admin


async def make_account(
    client: httpx.AsyncClient, roles: list[str], *, clock: FrozenClock, marker: str = "user"
) -> Account:
    """A fresh organization with one location and one user holding `roles`, created the
    way an organization is set up: the operator creates it with its first org admin
    (bootstrap token), the admin signs in with TOTP and adds the location and the user."""
    admin = await first_admin(client, clock)
    loc = await client.post(
        f"/organizations/{admin.org_id}/locations",
        json={
            "name": "North",
            "time_zone": "America/Chicago",
            "features": {"reminders": True},
        },
        headers=admin.headers,
    )
    assert loc.status_code == 201, loc.text
    email = f"{marker}@example.org"
    user = await client.post(
        f"/organizations/{admin.org_id}/users",
        json={
            "email": email.upper(),
            "display_name": "Dana Reyes",
            "password": PASSWORD,
            "roles": roles,
            "locations": [loc.json()["id"]],
        },
        headers=admin.headers,
    )
    assert user.status_code == 201, user.text
    assert user.json()["email"] == email
    return Account(admin.org_id, user.json()["id"], email, loc.json()["id"], admin)


@dataclass
class Admin:
    org_id: str
    user_id: str
    email: str
    access_token: str
    totp_secret: bytes

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def first_admin(client: httpx.AsyncClient, clock: FrozenClock) -> Admin:
    """A new organization and its first org admin, signed in with a second factor."""
    email = "first-admin@example.org"
    org = await client.post(
        "/organizations",
        json={
            "name": "Lakeside Clinics",
            "admin": {"email": email, "display_name": "Ada Admin", "password": PASSWORD},
        },
        headers=ADMIN,
    )
    assert org.status_code == 201, org.text
    org_id, admin_id = org.json()["id"], org.json()["admin_user_id"]
    credentials = {"org_id": org_id, "email": email, "password": PASSWORD}
    first = await client.post("/auth/login", json=credentials)
    assert first.status_code == 200, first.text
    bearer = {"Authorization": f"Bearer {first.json()['access_token']}"}
    enrolled = await client.post("/auth/mfa/enroll", headers=bearer)
    assert enrolled.status_code == 200, enrolled.text
    secret = totp.from_base32(enrolled.json()["secret"])
    verified = await client.post(
        "/auth/mfa/verify", json={"code": totp.totp(secret, clock.now())}, headers=bearer
    )
    assert verified.status_code == 200, verified.text
    # A one-time code is good once: sign in with the next step's code (inside the
    # drift window), so the test clock need not move.
    next_code = totp.totp(secret, clock.now() + timedelta(seconds=totp.STEP_S))
    signed_in = await client.post("/auth/login", json={**credentials, "otp": next_code})
    assert signed_in.status_code == 200, signed_in.text
    return Admin(org_id, admin_id, email, signed_in.json()["access_token"], secret)


async def login(
    client: httpx.AsyncClient, account: Account, password: str = PASSWORD, **extra: Any
) -> httpx.Response:
    return await client.post(
        "/auth/login",
        json={"org_id": account.org_id, "email": account.email, "password": password, **extra},
    )


async def verify_with_jwks(
    client: httpx.AsyncClient, token: str, *, leeway_s: int = 0
) -> dict[str, Any]:
    """What any service does: pick the key by kid from the JWKS and verify with PyJWT."""
    jwks = (await client.get("/.well-known/jwks.json")).json()
    kid = jwt.get_unverified_header(token)["kid"]
    (key,) = [k for k in jwks["keys"] if k["kid"] == kid]
    claims: dict[str, Any] = jwt.decode(
        token,
        jwt.PyJWK(key),
        algorithms=["EdDSA"],
        audience="careloop",
        issuer="careloop-identity",
        leeway=leeway_s,
    )
    return claims


async def identity_events(settings: IdentitySettings) -> list[tuple[str, dict[str, Any]]]:
    records = await read_topic(
        settings.kafka_bootstrap, f"{settings.topic_prefix}careloop.identity"
    )
    return [(header(r, "ce_type") or "", json.loads(r.value)) for r in records]


async def test_admin_endpoints_need_the_bootstrap_token(identity: httpx.AsyncClient) -> None:
    assert (await identity.get("/organizations")).status_code == 401
    wrong = await identity.get("/organizations", headers={"X-Bootstrap-Token": "nope"})
    assert wrong.status_code == 401
    assert wrong.headers["content-type"] == "application/problem+json"


async def test_locations_users_and_their_validation(
    identity: httpx.AsyncClient, clock: FrozenClock
) -> None:
    account = await make_account(identity, ["front_desk"], clock=clock)
    org = account.org_id
    admin = account.admin.headers
    bad_zone = await identity.post(
        f"/organizations/{org}/locations",
        json={"name": "X", "time_zone": "Mars/Olympus"},
        headers=admin,
    )
    assert bad_zone.status_code == 422
    locations = (await identity.get(f"/organizations/{org}/locations", headers=admin)).json()
    assert locations["items"][0]["features"] == {"reminders": True}
    assert locations["items"][0]["sensitive"] is False

    def user(**overrides: Any) -> dict[str, Any]:
        body = {
            "email": "other@example.org",
            "display_name": "Other",
            "password": PASSWORD,
            "roles": ["billing"],
            "locations": "*",
        }
        return {**body, **overrides}

    for body in [
        user(password="short"),
        user(password="onlylowercaseletters"),
        user(roles=["patient"]),
        user(locations=["no-such-location"]),
    ]:
        response = await identity.post(f"/organizations/{org}/users", json=body, headers=admin)
        assert response.status_code == 422, body
    duplicate = await identity.post(
        f"/organizations/{org}/users", json=user(email=account.email), headers=admin
    )
    assert duplicate.status_code == 409
    portal = await identity.post(
        f"/organizations/{org}/users",
        json=user(email="pat@example.org", roles=["patient"], patient_id="pat-123"),
        headers=admin,
    )
    assert portal.status_code == 201, portal.text
    read = await identity.get(f"/organizations/{org}/users/{portal.json()['id']}", headers=admin)
    assert read.json()["patient_id"] == "pat-123"
    assert "password" not in json.dumps(read.json())
    portal_login = await identity.post(
        "/auth/login",
        json={"org_id": org, "email": "PAT@example.org", "password": PASSWORD},
    )
    assert portal_login.status_code == 200, portal_login.text
    claims = await verify_with_jwks(identity, portal_login.json()["access_token"])
    assert claims["act"] == "patient"
    assert claims["roles"] == ["patient"]
    assert claims["pat"] == "pat-123"
    assert claims["loc"] == ["*"]


async def test_login_issues_an_access_token_that_verifies_with_the_jwks(
    identity: httpx.AsyncClient, clock: FrozenClock
) -> None:
    account = await make_account(identity, ["front_desk"], clock=clock)
    response = await login(identity, account)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["mfa_enrollment_required"] is False
    assert body["refresh_token"].count(".") == 0  # opaque, not a JWT
    header_ = jwt.get_unverified_header(body["access_token"])
    assert set(header_) == {"alg", "typ", "kid"}
    assert header_["alg"] == "EdDSA"
    assert header_["typ"] == "at+jwt"
    assert header_["kid"].startswith(f"{SIGNING_KEY}:")
    claims = await verify_with_jwks(identity, body["access_token"])
    now = int(clock.now().timestamp())
    assert claims["iat"] == claims["nbf"] == now
    assert claims["exp"] == now + 300
    assert claims["sub"] == account.user_id
    assert claims["org"] == account.org_id
    assert claims["act"] == "user"
    assert claims["roles"] == ["front_desk"]
    assert claims["loc"] == [account.location_id]
    assert claims["amr"] == ["pwd"]
    assert claims["aud"] == "careloop"
    assert claims["sid"]
    assert claims["jti"]
    assert "pat" not in claims
    jwks = (await identity.get("/.well-known/jwks.json")).json()
    assert all(
        {k["kty"], k["crv"], k["alg"], k["use"]} == {"OKP", "Ed25519", "EdDSA", "sig"}
        for k in jwks["keys"]
    )


async def test_unknown_user_and_wrong_password_look_the_same_and_are_audited(
    identity: httpx.AsyncClient, identity_settings: IdentitySettings, clock: FrozenClock
) -> None:
    account = await make_account(identity, ["billing"], clock=clock, marker="quiet")
    wrong = await login(identity, account, "Wrong password 123")
    unknown = await identity.post(
        "/auth/login",
        json={"org_id": account.org_id, "email": "nobody@example.org", "password": PASSWORD},
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]
    records = await wait_for_records(
        identity_settings.kafka_bootstrap,
        f"{identity_settings.topic_prefix}careloop.identity",
        lambda rs: len(rs) >= 3,
    )
    audits = [json.loads(r.value) for r in records]
    denied = [a for a in audits if a.get("outcome") == "denied"]
    assert {a["actor_id"] for a in denied} == {account.user_id, "unknown"}
    assert all(a["resource_type"] == "Session" and a["phi_categories"] == [] for a in denied)
    everything = b"".join(r.value for r in records)
    assert b"nobody@example.org" not in everything
    assert b"quiet@example.org" not in everything


async def test_lockout_after_five_failures_and_unlock_after_fifteen_minutes(
    identity: httpx.AsyncClient, clock: FrozenClock
) -> None:
    account = await make_account(identity, ["billing"], clock=clock)
    for _ in range(4):
        assert (await login(identity, account, "Wrong password 123")).status_code == 401
    fifth = await login(identity, account, "Wrong password 123")
    assert fifth.status_code == 423
    assert fifth.headers["retry-after"] == "900"
    still = await login(identity, account)  # even the right password
    assert still.status_code == 423
    clock.advance(timedelta(minutes=14))
    assert (await login(identity, account)).headers["retry-after"] == "60"
    clock.advance(timedelta(minutes=1))
    assert (await login(identity, account)).status_code == 200
    # Success resets the count: four more failures do not lock.
    for _ in range(4):
        assert (await login(identity, account, "Wrong password 123")).status_code == 401
    assert (await login(identity, account)).status_code == 200


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/auth/refresh", json={"refresh_token": token})


async def test_refresh_rotates_and_reuse_revokes_the_session(
    identity: httpx.AsyncClient, identity_settings: IdentitySettings, clock: FrozenClock
) -> None:
    account = await make_account(identity, ["billing"], clock=clock)
    first = (await login(identity, account)).json()
    second = await refresh(identity, first["refresh_token"])
    assert second.status_code == 200
    second_body = second.json()
    assert second_body["refresh_token"] != first["refresh_token"]
    old_claims = await verify_with_jwks(identity, first["access_token"])
    new_claims = await verify_with_jwks(identity, second_body["access_token"])
    assert new_claims["sid"] == old_claims["sid"]
    assert new_claims["jti"] != old_claims["jti"]
    third = (await refresh(identity, second_body["refresh_token"])).json()

    reuse = await refresh(identity, first["refresh_token"])
    assert reuse.status_code == 401
    # The thief and the user share the session: the newest token is dead too.
    assert (await refresh(identity, third["refresh_token"])).status_code == 401
    await wait_for_records(
        identity_settings.kafka_bootstrap,
        f"{identity_settings.topic_prefix}careloop.identity",
        lambda rs: any(header(r, "ce_type") == "careloop.identity.session.revoked.v1" for r in rs),
    )
    events = await identity_events(identity_settings)
    revoked = [e for t, e in events if t == "careloop.identity.session.revoked.v1"]
    assert len(revoked) == 1
    assert revoked[0]["session_id"] == old_claims["sid"]
    assert revoked[0]["reason"] == "refresh_token_reuse"
    assert revoked[0]["user_id"] == account.user_id


async def test_idle_timeout(identity: httpx.AsyncClient, clock: FrozenClock) -> None:
    account = await make_account(identity, ["billing"], clock=clock)
    token = (await login(identity, account)).json()["refresh_token"]
    clock.advance(timedelta(minutes=29))
    token = (await refresh(identity, token)).json()["refresh_token"]  # activity extends it
    clock.advance(timedelta(minutes=31))
    expired = await refresh(identity, token)
    assert expired.status_code == 401
    assert expired.json()["reason"] == "idle"


async def test_absolute_session_limit(
    identity_settings: IdentitySettings, clock: FrozenClock
) -> None:
    settings = identity_settings.model_copy(update={"session_absolute_timeout_s": 3600})
    async with running_app(create_app(settings, clock=clock)) as client:
        account = await make_account(client, ["billing"], clock=clock)
        token = (await login(client, account)).json()["refresh_token"]
        for _ in range(2):
            clock.advance(timedelta(minutes=29))
            response = await refresh(client, token)
            assert response.status_code == 200
            token = response.json()["refresh_token"]
        clock.advance(timedelta(minutes=3))  # 61 minutes after login, 3 since last use
        expired = await refresh(client, token)
        assert expired.status_code == 401
        assert expired.json()["reason"] == "absolute"


async def test_logout_revokes_and_announces_it(
    identity: httpx.AsyncClient, identity_settings: IdentitySettings, clock: FrozenClock
) -> None:
    account = await make_account(identity, ["billing"], clock=clock)
    tokens = (await login(identity, account)).json()
    sid = jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"]
    out = await identity.post(
        "/auth/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert out.status_code == 204
    assert (await refresh(identity, tokens["refresh_token"])).status_code == 401
    # Logging out again is harmless and announces nothing new.
    again = await identity.post("/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert again.status_code == 204
    records = await wait_for_records(
        identity_settings.kafka_bootstrap,
        f"{identity_settings.topic_prefix}careloop.identity",
        lambda rs: any(header(r, "ce_type") == "careloop.identity.session.revoked.v1" for r in rs),
    )
    revoked = [
        json.loads(r.value)
        for r in records
        if header(r, "ce_type") == "careloop.identity.session.revoked.v1"
    ]
    assert len(revoked) == 1
    assert revoked[0]["session_id"] == sid
    assert revoked[0]["reason"] == "logout"
    assert revoked[0]["org_id"] == account.org_id
    assert (
        header(
            next(
                r for r in records if header(r, "ce_type") == "careloop.identity.session.revoked.v1"
            ),
            "ce_orgid",
        )
        == account.org_id
    )
    # The revoked session's access token no longer works here either.
    enroll = await identity.post(
        "/auth/mfa/enroll", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert enroll.status_code == 401


async def test_key_rotation_keeps_old_tokens_valid(
    identity: httpx.AsyncClient, vault_addr: str, vault_root_token: str, clock: FrozenClock
) -> None:
    account = await make_account(identity, ["billing"], clock=clock)
    old = (await login(identity, account)).json()
    old_kid = jwt.get_unverified_header(old["access_token"])["kid"]
    old_version = int(old_kid.rsplit(":", 1)[1])

    hvac.Client(url=vault_addr, token=vault_root_token).secrets.transit.rotate_key(name=SIGNING_KEY)
    jwks = (await identity.get("/.well-known/jwks.json")).json()
    kids = {k["kid"] for k in jwks["keys"]}
    assert {old_kid, f"{SIGNING_KEY}:{old_version + 1}"} <= kids
    assert (await verify_with_jwks(identity, old["access_token"]))["sub"] == account.user_id

    new = (await login(identity, account)).json()
    assert jwt.get_unverified_header(new["access_token"])["kid"] == (
        f"{SIGNING_KEY}:{old_version + 1}"
    )
    assert (await verify_with_jwks(identity, new["access_token"]))["sub"] == account.user_id
    # The service's own verifier accepts both generations too.
    for token in (old["access_token"], new["access_token"]):
        response = await identity.post("/auth/logout", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 204


async def test_mfa_enrollment_verification_and_login_with_otp(
    identity: httpx.AsyncClient, clock: FrozenClock
) -> None:
    account = await make_account(identity, ["provider"], clock=clock)
    first = (await login(identity, account)).json()
    assert first["mfa_enrollment_required"] is True
    claims = await verify_with_jwks(identity, first["access_token"])
    assert claims["amr"] == ["pwd"]
    bearer = {"Authorization": f"Bearer {first['access_token']}"}

    assert (await identity.post("/auth/mfa/enroll")).status_code == 401
    enrolled = await identity.post("/auth/mfa/enroll", headers=bearer)
    assert enrolled.status_code == 200, enrolled.text
    secret = totp.from_base32(enrolled.json()["secret"])
    assert enrolled.json()["otpauth_uri"].startswith("otpauth://totp/Careloop:")

    valid = {totp.totp(secret, clock.now() + timedelta(seconds=d)) for d in (-30, 0, 30)}
    wrong_code = next(f"{n:06d}" for n in range(10) if f"{n:06d}" not in valid)
    wrong = await identity.post("/auth/mfa/verify", json={"code": wrong_code}, headers=bearer)
    assert wrong.status_code == 422
    code = totp.totp(secret, clock.now())
    verified = await identity.post("/auth/mfa/verify", json={"code": code}, headers=bearer)
    assert verified.status_code == 200
    assert verified.json() == {"mfa_enabled": True}
    user = await identity.get(
        f"/organizations/{account.org_id}/users/{account.user_id}",
        headers=account.admin.headers,
    )
    assert user.json()["mfa_enabled"] is True

    without = await login(identity, account)
    assert without.status_code == 401
    assert without.json()["mfa_required"] is True
    # The code used for verification is spent; the next time step gives a fresh one.
    assert (await login(identity, account, otp=code)).status_code == 401
    clock.advance(timedelta(seconds=30))
    with_otp = await login(identity, account, otp=totp.totp(secret, clock.now()))
    assert with_otp.status_code == 200, with_otp.text
    body = with_otp.json()
    assert body["mfa_enrollment_required"] is False
    # The frozen clock is 30 s ahead of the wall clock PyJWT reads.
    verified_claims = await verify_with_jwks(identity, body["access_token"], leeway_s=60)
    assert verified_claims["amr"] == ["pwd", "otp"]


async def test_forged_tokens_are_refused(identity: httpx.AsyncClient, clock: FrozenClock) -> None:
    account = await make_account(identity, ["provider"], clock=clock)
    good = (await login(identity, account)).json()["access_token"]
    claims = jwt.decode(good, options={"verify_signature": False})
    header_ = jwt.get_unverified_header(good)
    unsigned = jwt.encode(claims, key=None, algorithm="none", headers={"typ": "at+jwt"})
    hmac_forged = jwt.encode(
        claims, key="x" * 32, algorithm="HS256", headers={"kid": header_["kid"], "typ": "at+jwt"}
    )
    head, _payload, signature = good.split(".")
    tampered_claims = {**claims, "roles": ["org_admin"]}
    tampered = ".".join(
        [head, jwt.utils.base64url_encode(json.dumps(tampered_claims).encode()).decode(), signature]
    )
    for token in (unsigned, hmac_forged, tampered, "not-a-token"):
        response = await identity.post(
            "/auth/mfa/enroll", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401, token
