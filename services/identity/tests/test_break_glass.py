"""Break-glass (emergency access) against real PostgreSQL, Kafka and OpenBao."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from careloop_identity.settings import IdentitySettings
from careloop_identity.store.tables import metadata
from careloop_kit.auth import totp
from careloop_kit.clock import FrozenClock
from careloop_kit.db.migrate import alembic_config
from careloop_kit.testing.kafka import header, wait_for_records

from .conftest import MIGRATIONS
from .test_service import Account, login, make_account, refresh, verify_with_jwks

pytestmark = pytest.mark.service

GRANTED = "careloop.identity.break_glass.granted.v1"
ACCESS = "careloop.audit.access.recorded.v1"
REASON = "Unconscious patient in the emergency department, chart needed now."
TTL_S = 3600


async def signed_in_with_otp(
    client: httpx.AsyncClient, clock: FrozenClock, account: Account
) -> dict[str, Any]:
    """Enroll TOTP and sign in with a one-time code: the tokens of that login."""
    first = (await login(client, account)).json()
    bearer = {"Authorization": f"Bearer {first['access_token']}"}
    enrolled = await client.post("/auth/mfa/enroll", headers=bearer)
    assert enrolled.status_code == 200, enrolled.text
    secret = totp.from_base32(enrolled.json()["secret"])
    code = totp.totp(secret, clock.now())
    assert (await client.post("/auth/mfa/verify", json={"code": code}, headers=bearer)).is_success
    clock.advance(timedelta(seconds=30))
    response = await login(client, account, otp=totp.totp(secret, clock.now()))
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def request_body(**overrides: Any) -> dict[str, Any]:
    body = {"patient_id": "pat-elsewhere", "reason_code": "emergency_treatment", "reason": REASON}
    body.update(overrides)
    return body


async def break_glass(client: httpx.AsyncClient, token: str, **overrides: Any) -> httpx.Response:
    return await client.post(
        "/auth/break-glass",
        json=request_body(**overrides),
        headers={"Authorization": f"Bearer {token}"},
    )


async def events(settings: IdentitySettings, wanted: int) -> list[tuple[str, dict[str, Any]]]:
    records = await wait_for_records(
        settings.kafka_bootstrap,
        f"{settings.topic_prefix}careloop.identity",
        lambda rs: sum(header(r, "ce_type") == GRANTED for r in rs) >= wanted,
    )
    return [(header(r, "ce_type") or "", json.loads(r.value)) for r in records]


async def test_provider_gets_a_grant_carried_by_tokens_announced_and_audited(
    identity: httpx.AsyncClient, identity_settings: IdentitySettings, clock: FrozenClock
) -> None:
    account = await make_account(identity, ["provider"], clock=clock)
    tokens = await signed_in_with_otp(identity, clock, account)
    before = await verify_with_jwks(identity, tokens["access_token"], leeway_s=120)

    response = await break_glass(identity, tokens["access_token"])

    assert response.status_code == 201, response.text
    body = response.json()
    grant_id = body["grant_id"]
    assert body["patient_id"] == "pat-elsewhere"
    assert body["reason_code"] == "emergency_treatment"
    assert body["expires_in"] == 300
    now = int(clock.now().timestamp())
    claims = await verify_with_jwks(identity, body["access_token"], leeway_s=120)
    assert claims["bg"] == [{"pat": "pat-elsewhere", "exp": now + TTL_S, "gid": grant_id}]
    assert claims["exp"] == now + 300  # the token keeps its short life; the grant lasts 1 h
    for name in ("sub", "sid", "org", "act", "roles", "loc", "amr"):
        assert claims[name] == before[name]
    assert claims["amr"] == ["pwd", "otp"]

    # Refresh re-includes the session's unexpired grants ...
    clock.advance(timedelta(minutes=20))
    renewed = await refresh(identity, tokens["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    renewed_claims = await verify_with_jwks(identity, renewed.json()["access_token"], leeway_s=2000)
    assert renewed_claims["bg"] == claims["bg"]
    # ... and leaves out expired ones.
    clock.advance(timedelta(minutes=25))
    again = await refresh(identity, renewed.json()["refresh_token"])
    clock.advance(timedelta(minutes=25))
    last = await refresh(identity, again.json()["refresh_token"])
    assert last.status_code == 200, last.text
    last_claims = await verify_with_jwks(identity, last.json()["access_token"], leeway_s=5000)
    assert "bg" not in last_claims

    records = await events(identity_settings, 1)
    granted = [payload for kind, payload in records if kind == GRANTED]
    assert len(granted) == 1
    assert granted[0] == {
        "grant_id": grant_id,
        "org_id": account.org_id,
        "user_id": account.user_id,
        "patient_id": "pat-elsewhere",
        "reason_code": "emergency_treatment",
        "granted_at": granted[0]["granted_at"],
        "expires_at": granted[0]["expires_at"],
    }
    assert REASON not in json.dumps(granted)  # the alert carries no free text
    audits = [p for kind, p in records if kind == ACCESS and p["resource_type"] == "BreakGlass"]
    assert len(audits) == 1
    assert audits[0]["action"] == "create"
    assert audits[0]["outcome"] == "success"
    assert audits[0]["purpose_of_use"] == "ETREAT"
    assert audits[0]["phi_categories"] == []
    assert audits[0]["patient_id"] == "pat-elsewhere"
    assert audits[0]["resource_id"] == grant_id
    assert audits[0]["actor_id"] == account.user_id
    assert "emergency_treatment" in audits[0]["outcome_detail"]

    # The free-text reason is stored, but only as ciphertext.
    engine = create_async_engine(identity_settings.database_url.get_secret_value())
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT reason_ct, session_id FROM break_glass_grant WHERE id = :id"),
                    {"id": grant_id},
                )
            ).one()
    finally:
        await engine.dispose()
    assert row.session_id == claims["sid"]
    assert REASON.encode() not in bytes(row.reason_ct)


async def test_only_providers_may_break_the_glass_and_denials_are_audited(
    identity: httpx.AsyncClient, identity_settings: IdentitySettings, clock: FrozenClock
) -> None:
    front_desk = await make_account(identity, ["front_desk"], clock=clock, marker="desk")
    token = (await login(identity, front_desk)).json()["access_token"]
    refused = await break_glass(identity, token)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"

    provider = await make_account(identity, ["provider"], clock=clock, marker="doc")
    password_only = (await login(identity, provider)).json()["access_token"]
    no_otp = await break_glass(identity, password_only)
    assert no_otp.status_code == 403
    assert no_otp.json()["detail"].startswith("multi-factor authentication required")

    assert (await identity.post("/auth/break-glass", json=request_body())).status_code == 401
    assert (await break_glass(identity, "not-a-token")).status_code == 401

    records = await wait_for_records(
        identity_settings.kafka_bootstrap,
        f"{identity_settings.topic_prefix}careloop.identity",
        lambda rs: (
            sum(
                header(r, "ce_type") == ACCESS
                and json.loads(r.value)["resource_type"] == "BreakGlass"
                for r in rs
            )
            >= 2
        ),
    )
    kinds = [header(r, "ce_type") for r in records]
    assert GRANTED not in kinds
    denied = [
        json.loads(r.value)
        for r in records
        if header(r, "ce_type") == ACCESS and json.loads(r.value)["resource_type"] == "BreakGlass"
    ]
    assert {(d["actor_id"], d["outcome"]) for d in denied} == {
        (front_desk.user_id, "denied"),
        (provider.user_id, "denied"),
    }


@pytest.mark.parametrize(
    "overrides",
    [
        {"reason": "too short"},
        {"reason": "x" * 501},
        {"reason_code": "curiosity"},
        {"patient_id": ""},
        {"reason": None},
    ],
)
async def test_invalid_requests_are_422(
    identity: httpx.AsyncClient, clock: FrozenClock, overrides: dict[str, Any]
) -> None:
    account = await make_account(identity, ["provider"], clock=clock)
    tokens = await signed_in_with_otp(identity, clock, account)
    body = request_body(**overrides)
    if body["reason"] is None:
        del body["reason"]
    response = await identity.post(
        "/auth/break-glass",
        json=body,
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert response.status_code == 422, response.text


async def test_migrations_reach_head_and_match_the_tables(
    identity_settings: IdentitySettings,
) -> None:
    from alembic.autogenerate import compare_metadata

    config = alembic_config(MIGRATIONS, identity_settings.database_url.get_secret_value())
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head == "0005_field_keys"
    engine = create_async_engine(identity_settings.database_url.get_secret_value())
    try:
        async with engine.connect() as conn:

            def inspect(sync_conn: Any) -> tuple[str | None, list[Any]]:
                context = MigrationContext.configure(sync_conn)
                return context.get_current_revision(), compare_metadata(context, metadata)

            current, diff = await conn.run_sync(inspect)
    finally:
        await engine.dispose()
    assert current == head
    assert diff == []
