"""Service identities against real PostgreSQL, Kafka and OpenBao: a service trades a JWT
assertion signed by its own Vault transit key for an access token (RFC 7523), and every
way of presenting someone else's identity, an old assertion or a forged one is refused
and audited."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import hvac
import pytest
from fastapi import FastAPI, Request
from hvac.exceptions import Forbidden

from careloop_identity.app import create_app
from careloop_identity.settings import IdentitySettings
from careloop_identity.usecases.service_tokens import (
    JWT_BEARER_GRANT,
    UnsupportedGrant,
    exchange_service_assertion,
)
from careloop_kit.audit import request_meta
from careloop_kit.auth import (
    ServiceCredentials,
    ServiceTokenError,
    ServiceTokenSource,
    StaticJwksSource,
    TokenVerifier,
    principal_from_claims,
    visible_categories,
)
from careloop_kit.clock import FrozenClock
from careloop_kit.service import RuntimeDep
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.kafka import wait_for_records
from careloop_kit.vault import Vault

from .conftest import ADMIN

pytestmark = pytest.mark.service

TOKEN_PATH = "/oauth/token"
MESSAGING_KEY = "careloop-service-messaging"


def with_token_endpoint(app: FastAPI) -> FastAPI:
    """The app, with a minimal `POST /oauth/token` (JWT-bearer only) if it has none yet:
    the real token endpoint is built separately and hands this grant to the same
    `exchange_service_assertion`."""
    if any(getattr(route, "path", None) == TOKEN_PATH for route in app.routes):
        return app

    async def token(request: Request, runtime: RuntimeDep) -> dict[str, Any]:
        form = parse_qs((await request.body()).decode(), keep_blank_values=True)
        if form.get("grant_type") != [JWT_BEARER_GRANT]:
            raise UnsupportedGrant("Only the JWT-bearer grant is enabled here.")
        (assertion,) = form.get("assertion", [""])
        scope = form.get("scope", [None])[0]
        orgs = form.get("org", [])
        return await exchange_service_assertion(
            runtime,
            assertion=assertion,
            scope=scope,
            # Sent once or it counts as not sent (RFC 6749 §3.2).
            org=orgs[0] if len(orgs) == 1 else None,
            meta=request_meta(request),
        )

    app.add_api_route(TOKEN_PATH, token, methods=["POST"])
    return app


@pytest.fixture
async def identity(
    identity_settings: IdentitySettings, clock: FrozenClock
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(with_token_endpoint(create_app(identity_settings, clock=clock))) as c:
        yield c


@pytest.fixture
async def org_id(identity: httpx.AsyncClient) -> str:
    response = await identity.post("/organizations", json={"name": "Harbor Health"}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture
def messaging_vault(vault_addr: str, vault_tokens: dict[str, str]) -> Vault:
    return Vault(vault_addr, vault_tokens["messaging"])


# --- helpers --------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value).encode())


def decode(part: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return value


def transit_signer(vault_addr: str, token: str, key: str) -> Callable[[bytes], bytes]:
    """Signs with a transit key through a given Vault token (as that service could)."""
    client = hvac.Client(url=vault_addr, token=token)

    def sign(message: bytes) -> bytes:
        signature = client.secrets.transit.sign_data(
            name=key, hash_input=base64.b64encode(message).decode()
        )["data"]["signature"]
        return base64.b64decode(signature.split(":")[2])

    return sign


def compact(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{segment(header)}.{segment(claims)}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


def latest_version(vault_addr: str, token: str, key: str) -> int:
    data = hvac.Client(url=vault_addr, token=token).secrets.transit.read_key(name=key)["data"]
    return int(data["latest_version"])


def claims_now(clock: FrozenClock, service: str = "messaging", **overrides: Any) -> dict[str, Any]:
    now = int(clock.now().timestamp())
    claims: dict[str, Any] = {
        "iss": f"service:{service}",
        "sub": f"service:{service}",
        "aud": "careloop-identity",
        "iat": now,
        "exp": now + 30,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    return claims


async def exchange(
    client: httpx.AsyncClient, assertion: str, org: str | None, **extra: str
) -> httpx.Response:
    form = {"grant_type": JWT_BEARER_GRANT, "assertion": assertion, **extra}
    if org is not None:
        form["org"] = org
    return await client.post(TOKEN_PATH, data=form)


def assert_refused(response: httpx.Response, error: str = "invalid_grant") -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["error"] == error, body
    assert "access_token" not in body


def token_source(
    vault: Vault, clock: FrozenClock, identity: httpx.AsyncClient
) -> ServiceTokenSource:
    """The messaging service's token source, calling identity in-process."""
    return ServiceTokenSource(vault, "messaging", TOKEN_PATH, clock=clock, http=identity)


async def verifier(identity: httpx.AsyncClient, clock: FrozenClock) -> TokenVerifier:
    """The verifier every service runs, over identity's published JWKS."""
    jwks = (await identity.get("/.well-known/jwks.json")).json()
    return TokenVerifier(StaticJwksSource(jwks), clock=clock)


async def service_token_audits(settings: IdentitySettings, count: int) -> list[dict[str, Any]]:
    def audits(records: list[Any]) -> list[dict[str, Any]]:
        values = [json.loads(r.value) for r in records]
        return [v for v in values if v.get("resource_type") == "ServiceToken"]

    records = await wait_for_records(
        settings.kafka_bootstrap,
        f"{settings.topic_prefix}careloop.identity",
        lambda rs: len(audits(rs)) >= count,
    )
    return audits(records)


# --- the grant ------------------------------------------------------------------------


async def test_messaging_gets_a_token_that_every_service_accepts(
    identity: httpx.AsyncClient,
    identity_settings: IdentitySettings,
    clock: FrozenClock,
    messaging_vault: Vault,
    org_id: str,
) -> None:
    source = ServiceTokenSource(
        messaging_vault, "messaging", TOKEN_PATH, clock=clock, http=identity
    )

    token = await source.token(org_id)

    claims = await (await verifier(identity, clock)).verify(token)
    assert (claims.act, claims.sub, claims.org) == ("service", "service:messaging", org_id)
    assert (claims.roles, claims.loc, claims.amr) == ((), ("*",), ("jwt-bearer",))
    assert claims.scope == "patients:read"
    assert claims.exp - claims.iat == identity_settings.access_token_ttl_s
    principal = principal_from_claims(claims, now=clock.now().timestamp())
    assert visible_categories(principal, "patients:read") == {"contact", "preferences"}
    assert visible_categories(principal, "patients:search") == frozenset()
    assert await source.token(org_id) == token  # cached, no second exchange

    (audit,) = await service_token_audits(identity_settings, 1)
    assert audit["outcome"] == "success"
    assert (audit["actor_id"], audit["actor_type"]) == ("service:messaging", "service")
    assert audit["org_id"] == org_id
    assert audit["action"] == "create"
    assert audit["resource_id"] == claims.sid
    assert audit["phi_categories"] == []


async def test_the_token_response_and_scopes(
    identity: httpx.AsyncClient, clock: FrozenClock, messaging_vault: Vault, org_id: str
) -> None:
    credentials = ServiceCredentials(messaging_vault, "messaging", clock=clock)

    response = await exchange(identity, await credentials.assertion(), org_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.keys() == {"access_token", "token_type", "expires_in", "scope"}
    assert (body["token_type"], body["expires_in"], body["scope"]) == (
        "Bearer",
        300,
        "patients:read",
    )

    asked = await exchange(identity, await credentials.assertion(), org_id, scope="patients:read")
    assert asked.status_code == 200, asked.text
    assert asked.json()["scope"] == "patients:read"
    beyond = await exchange(
        identity, await credentials.assertion(), org_id, scope="patients:read patients:update"
    )
    assert_refused(beyond, "invalid_scope")


async def test_a_replayed_assertion_is_refused(
    identity: httpx.AsyncClient,
    identity_settings: IdentitySettings,
    clock: FrozenClock,
    messaging_vault: Vault,
    org_id: str,
) -> None:
    assertion = await ServiceCredentials(messaging_vault, "messaging", clock=clock).assertion()

    first = await exchange(identity, assertion, org_id)
    again = await exchange(identity, assertion, org_id)

    assert first.status_code == 200, first.text
    assert_refused(again)
    assert "already used" in again.json()["detail"]
    audits = await service_token_audits(identity_settings, 2)
    assert [(a["outcome"], a["actor_id"]) for a in audits] == [
        ("success", "service:messaging"),
        ("denied", "service:messaging"),
    ]
    assert audits[1]["outcome_detail"].startswith("400 invalid_grant")


async def test_the_org_must_exist_and_be_named(
    identity: httpx.AsyncClient, clock: FrozenClock, messaging_vault: Vault
) -> None:
    credentials = ServiceCredentials(messaging_vault, "messaging", clock=clock)
    assert_refused(await exchange(identity, await credentials.assertion(), None), "invalid_request")
    unknown = await exchange(identity, await credentials.assertion(), f"org-{uuid.uuid4()}")
    assert_refused(unknown, "invalid_request")
    source = ServiceTokenSource(
        messaging_vault, "messaging", TOKEN_PATH, clock=clock, http=identity
    )
    with pytest.raises(ServiceTokenError, match="invalid_request"):
        await source.token("no-such-org")


# --- someone else's identity ----------------------------------------------------------


async def test_the_patients_key_cannot_speak_for_messaging(
    identity: httpx.AsyncClient,
    clock: FrozenClock,
    vault_addr: str,
    vault_tokens: dict[str, str],
    org_id: str,
) -> None:
    patients_key = transit_signer(vault_addr, vault_tokens["patients"], "careloop-service-patients")
    version = latest_version(vault_addr, vault_tokens["identity"], MESSAGING_KEY)
    header = {"alg": "EdDSA", "typ": "JWT"}

    own_kid = compact(
        {**header, "kid": "careloop-service-patients:1"}, claims_now(clock), patients_key
    )
    messaging_kid = compact(
        {**header, "kid": f"{MESSAGING_KEY}:{version}"}, claims_now(clock), patients_key
    )

    assert_refused(await exchange(identity, own_kid, org_id))
    assert_refused(await exchange(identity, messaging_kid, org_id))


async def test_messagings_vault_token_cannot_sign_with_another_services_key(
    vault_addr: str, vault_tokens: dict[str, str]
) -> None:
    messaging = hvac.Client(url=vault_addr, token=vault_tokens["messaging"])
    for key in ("careloop-service-patients", "careloop-identity-signing"):
        with pytest.raises(Forbidden):
            messaging.secrets.transit.sign_data(
                name=key, hash_input=base64.b64encode(b"x").decode()
            )


async def test_a_service_without_grants_gets_no_token(
    identity: httpx.AsyncClient,
    clock: FrozenClock,
    vault_addr: str,
    vault_tokens: dict[str, str],
    org_id: str,
) -> None:
    # The audit service's assertion is genuine (its own key), but it holds no grants.
    audit = ServiceCredentials(Vault(vault_addr, vault_tokens["audit"]), "audit", clock=clock)
    assert_refused(await exchange(identity, await audit.assertion(), org_id), "unauthorized_client")
    unheard_of = compact(
        {"alg": "EdDSA", "typ": "JWT", "kid": "careloop-service-nobody:1"},
        claims_now(clock, service="nobody"),
        transit_signer(vault_addr, vault_tokens["audit"], "careloop-service-audit"),
    )
    assert_refused(await exchange(identity, unheard_of, org_id), "unauthorized_client")


# --- time -----------------------------------------------------------------------------


async def test_expired_future_and_long_lived_assertions_are_refused(
    identity: httpx.AsyncClient,
    clock: FrozenClock,
    vault_addr: str,
    vault_tokens: dict[str, str],
    messaging_vault: Vault,
    org_id: str,
) -> None:
    credentials = ServiceCredentials(messaging_vault, "messaging", clock=clock)
    stale = await credentials.assertion()
    late = await credentials.assertion()
    clock.advance(timedelta(seconds=39))  # 30 s life + 10 s leeway: still just in time
    assert (await exchange(identity, late, org_id)).status_code == 200
    clock.advance(timedelta(seconds=1))
    assert_refused(await exchange(identity, stale, org_id))

    key = transit_signer(vault_addr, vault_tokens["messaging"], MESSAGING_KEY)
    version = latest_version(vault_addr, vault_tokens["identity"], MESSAGING_KEY)
    header = {"alg": "EdDSA", "typ": "JWT", "kid": f"{MESSAGING_KEY}:{version}"}
    now = int(clock.now().timestamp())
    for claims in (
        claims_now(clock, exp=now + 61),  # lives longer than a minute
        claims_now(clock, iat=now + 60, exp=now + 90),  # issued in the future
        claims_now(clock, exp=now),  # expires as it is issued
        claims_now(clock, nbf=now + 60),  # not valid yet
    ):
        assert_refused(await exchange(identity, compact(header, claims, key), org_id))
    genuine = compact(header, claims_now(clock), key)
    assert (await exchange(identity, genuine, org_id)).status_code == 200


# --- forgeries ------------------------------------------------------------------------


async def test_forged_algorithms_headers_and_claims_are_refused(
    identity: httpx.AsyncClient,
    clock: FrozenClock,
    vault_addr: str,
    vault_tokens: dict[str, str],
    org_id: str,
) -> None:
    key = transit_signer(vault_addr, vault_tokens["messaging"], MESSAGING_KEY)
    kid = f"{MESSAGING_KEY}:{latest_version(vault_addr, vault_tokens['identity'], MESSAGING_KEY)}"
    header = {"alg": "EdDSA", "typ": "JWT", "kid": kid}
    public_key = b64url(b"\x00" * 32)
    forgeries = {
        "alg none": compact({**header, "alg": "none"}, claims_now(clock), lambda _: b""),
        "alg HS256": compact({**header, "alg": "HS256"}, claims_now(clock), key),
        "typ of an access token": compact({**header, "typ": "at+jwt"}, claims_now(clock), key),
        "no kid": compact({"alg": "EdDSA", "typ": "JWT"}, claims_now(clock), key),
        "jwk": compact(
            {**header, "jwk": {"kty": "OKP", "crv": "Ed25519", "x": public_key}},
            claims_now(clock),
            key,
        ),
        "jku": compact({**header, "jku": "http://attacker.invalid/jwks"}, claims_now(clock), key),
        "x5u": compact({**header, "x5u": "http://attacker.invalid/cert"}, claims_now(clock), key),
        "crit": compact({**header, "crit": ["exp"]}, claims_now(clock), key),
        "extra header": compact({**header, "cty": "JWT"}, claims_now(clock), key),
        "kid of the identity key": compact(
            {**header, "kid": "careloop-identity-signing:1"}, claims_now(clock), key
        ),
        "unknown key version": compact(
            {**header, "kid": f"{MESSAGING_KEY}:9999"}, claims_now(clock), key
        ),
        "iss differs from sub": compact(header, claims_now(clock, sub="service:patients"), key),
        "a user as iss": compact(header, claims_now(clock, iss="user-1", sub="user-1"), key),
        "wrong audience": compact(header, claims_now(clock, aud="careloop"), key),
        "audience list": compact(header, claims_now(clock, aud=["careloop-identity"]), key),
        "token endpoint as audience": compact(
            header, claims_now(clock, aud="http://service/oauth/token"), key
        ),
        "no jti": compact(header, {k: v for k, v in claims_now(clock).items() if k != "jti"}, key),
        "not a JWS": "not-a-jwt",
    }
    genuine = compact(header, claims_now(clock), key)
    head, body, signature = genuine.split(".")
    tampered = claims_now(clock, jti=decode(body)["jti"], exp=decode(body)["exp"] + 1)
    forgeries["tampered claims"] = f"{head}.{segment(tampered)}.{signature}"

    outcomes = {
        name: (await exchange(identity, assertion, org_id)).json().get("error")
        for name, assertion in forgeries.items()
    }

    refused = {"invalid_grant", "unauthorized_client"}
    assert {name: error for name, error in outcomes.items() if error not in refused} == {}
    assert (await exchange(identity, genuine, org_id)).status_code == 200


async def test_an_identity_access_token_is_no_assertion(
    identity: httpx.AsyncClient, clock: FrozenClock, messaging_vault: Vault, org_id: str
) -> None:
    source = ServiceTokenSource(
        messaging_vault, "messaging", TOKEN_PATH, clock=clock, http=identity
    )
    access_token = await source.token(org_id)
    assert_refused(await exchange(identity, access_token, org_id))


async def test_every_issued_and_refused_exchange_is_audited(
    identity: httpx.AsyncClient,
    identity_settings: IdentitySettings,
    clock: FrozenClock,
    vault_addr: str,
    vault_tokens: dict[str, str],
    messaging_vault: Vault,
    org_id: str,
) -> None:
    messaging = ServiceCredentials(messaging_vault, "messaging", clock=clock)
    audit_service = ServiceCredentials(
        Vault(vault_addr, vault_tokens["audit"]), "audit", clock=clock
    )
    assert (await exchange(identity, await messaging.assertion(), org_id)).status_code == 200
    assert (await exchange(identity, await audit_service.assertion(), org_id)).status_code == 400
    assert (await exchange(identity, "garbage", org_id)).status_code == 400
    assert (await exchange(identity, await messaging.assertion(), None)).status_code == 400

    audits = await service_token_audits(identity_settings, 4)

    # Records are keyed by organization, so only each tenant's own order is kept.
    outcomes = {
        (a["outcome"], a["actor_id"], a["org_id"], (a["outcome_detail"] or "").split(":")[0])
        for a in audits
    }
    assert outcomes == {
        ("success", "service:messaging", org_id, ""),
        ("denied", "service:audit", org_id, "400 unauthorized_client"),
        ("denied", "unknown", org_id, "400 invalid_grant"),
        ("denied", "service:messaging", "unknown", "400 invalid_request"),
    }
    assert all(a["actor_type"] == "service" and a["phi_categories"] == [] for a in audits)
    # The trail names who asked, never the credential itself.
    assert not any("garbage" in json.dumps(a) for a in audits)
