"""The kit's service-identity client: assertions signed by the service's own Vault
transit key (real OpenBao), the token exchange against a stand-in token endpoint, its
cache and its error messages; and the Vault policies that make the key the service's own."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import hvac
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hvac.exceptions import Forbidden

from careloop_kit.auth import (
    JWT_BEARER_GRANT_TYPE,
    ServiceCredentials,
    ServiceTokenError,
    ServiceTokenSource,
    service_identity,
    service_key_name,
)
from careloop_kit.clock import FrozenClock
from careloop_kit.infra import openbao
from careloop_kit.infra.openbao import bootstrap_vault
from careloop_kit.problems import DependencyUnavailable
from careloop_kit.vault import Vault

pytestmark = pytest.mark.service

TOKEN_URL = "http://identity.test/oauth/token"
Handler = Callable[[httpx.Request], Any]


def decode(segment: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return value


def public_key(vault_addr: str, root_token: str, key_name: str, version: int) -> Ed25519PublicKey:
    data = hvac.Client(url=vault_addr, token=root_token).secrets.transit.read_key(name=key_name)
    raw = base64.b64decode(data["data"]["keys"][str(version)]["public_key"])
    return Ed25519PublicKey.from_public_bytes(raw)


def check_signature(assertion: str, key: Ed25519PublicKey) -> None:
    head, body, signature = assertion.split(".")
    key.verify(
        base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
        f"{head}.{body}".encode(),
    )


class FakeTokenEndpoint:
    """Stands in for identity's `POST /oauth/token`: records each form, answers tokens."""

    def __init__(self, *, expires_in: int = 300, delay_s: float = 0.0) -> None:
        self.forms: list[dict[str, str]] = []
        self.expires_in = expires_in
        self.delay_s = delay_s

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.forms.append(form)
        number = len(self.forms)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return httpx.Response(
            200,
            json={
                "access_token": f"token-{number}",
                "token_type": "Bearer",
                "expires_in": self.expires_in,
                "scope": "patients:read",
            },
        )


def source(
    vault_addr: str,
    token: str,
    handler: Handler,
    clock: FrozenClock,
    *,
    service: str = "messaging",
) -> ServiceTokenSource:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ServiceTokenSource(Vault(vault_addr, token), service, TOKEN_URL, clock=clock, http=http)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


# --- the assertion --------------------------------------------------------------------


async def test_the_assertion_is_a_short_eddsa_jwt_signed_by_the_service_key(
    vault_addr: str, vault_root_token: str, vault_tokens: dict[str, str], clock: FrozenClock
) -> None:
    credentials = ServiceCredentials(
        Vault(vault_addr, vault_tokens["messaging"]), "messaging", clock=clock
    )

    assertion = await credentials.assertion()

    head, body, _ = assertion.split(".")
    header, claims = decode(head), decode(body)
    assert header.keys() == {"alg", "typ", "kid"}
    assert (header["alg"], header["typ"]) == ("EdDSA", "JWT")
    key_name, _, version = header["kid"].rpartition(":")
    assert key_name == "careloop-service-messaging"
    iat = int(clock.now().timestamp())
    assert claims.keys() == {"iss", "sub", "aud", "iat", "exp", "jti"}
    assert claims["iss"] == claims["sub"] == "service:messaging"
    assert claims["aud"] == "careloop-identity"
    assert (claims["iat"], claims["exp"]) == (iat, iat + 30)
    assert uuid.UUID(claims["jti"]).version == 4
    check_signature(assertion, public_key(vault_addr, vault_root_token, key_name, int(version)))
    again = decode((await credentials.assertion()).split(".")[1])
    assert again["jti"] != claims["jti"]


async def test_the_kid_follows_a_rotated_key(
    vault_addr: str, vault_root_token: str, unique_id: str, clock: FrozenClock
) -> None:
    # A service of this test only, so rotating its key disturbs no other test.
    service = f"kit-{unique_id}"
    token = bootstrap_vault(vault_addr, vault_root_token, [service])[service]
    credentials = ServiceCredentials(Vault(vault_addr, token), service, clock=clock)
    first = await credentials.assertion()
    assert decode(first.split(".")[0])["kid"] == f"careloop-service-{service}:1"

    hvac.Client(url=vault_addr, token=vault_root_token).secrets.transit.rotate_key(
        name=service_key_name(service)
    )
    rotated = await credentials.assertion()

    assert decode(rotated.split(".")[0])["kid"] == f"careloop-service-{service}:2"
    check_signature(rotated, public_key(vault_addr, vault_root_token, service_key_name(service), 2))


def test_assertions_live_at_most_a_minute_and_names_are_checked() -> None:
    vault = Vault("http://127.0.0.1:1", "unused")
    with pytest.raises(ValueError, match="60"):
        ServiceCredentials(vault, "messaging", lifetime_s=61)
    with pytest.raises(ValueError, match="bad service name"):
        ServiceCredentials(vault, "Messaging!")
    assert service_key_name("messaging") == "careloop-service-messaging"
    # Vault provisioning and the client must agree on where a service's key lives.
    assert openbao.SERVICE_KEY_PREFIX == service_identity.SERVICE_KEY_PREFIX
    assert openbao.service_key_name("care-gaps") == service_key_name("care-gaps")


# --- the exchange and its cache -------------------------------------------------------


async def test_the_token_request_is_a_jwt_bearer_grant_for_one_org(
    vault_addr: str, vault_tokens: dict[str, str], clock: FrozenClock
) -> None:
    endpoint = FakeTokenEndpoint()
    async with source(vault_addr, vault_tokens["messaging"], endpoint, clock) as tokens:
        assert await tokens.token("org-1") == "token-1"
        assert await tokens.token("org-1", scope="patients:read") == "token-2"

    plain, scoped = endpoint.forms
    assert plain.keys() == {"grant_type", "assertion", "org"}
    assert (
        plain["grant_type"]
        == JWT_BEARER_GRANT_TYPE
        == ("urn:ietf:params:oauth:grant-type:jwt-bearer")
    )
    assert plain["org"] == "org-1"
    assert decode(plain["assertion"].split(".")[1])["sub"] == "service:messaging"
    assert scoped["scope"] == "patients:read"
    assert scoped["assertion"] != plain["assertion"]


async def test_a_token_is_reused_per_org_until_shortly_before_it_expires(
    vault_addr: str, vault_tokens: dict[str, str], clock: FrozenClock
) -> None:
    endpoint = FakeTokenEndpoint(expires_in=300)
    async with source(vault_addr, vault_tokens["messaging"], endpoint, clock) as tokens:
        assert await tokens.token("org-1") == "token-1"
        clock.advance(timedelta(seconds=269))
        assert await tokens.token("org-1") == "token-1"
        assert await tokens.token("org-2") == "token-2"  # another tenant, another token
        clock.advance(timedelta(seconds=1))  # 30 s before expiry: refreshed
        assert await tokens.token("org-1") == "token-3"
        tokens.forget("org-1")  # e.g. the called service answered 401
        assert await tokens.token("org-1") == "token-4"
    assert [form["org"] for form in endpoint.forms] == ["org-1", "org-2", "org-1", "org-1"]


async def test_short_tokens_are_refreshed_at_half_life(
    vault_addr: str, vault_tokens: dict[str, str], clock: FrozenClock
) -> None:
    endpoint = FakeTokenEndpoint(expires_in=20)
    async with source(vault_addr, vault_tokens["messaging"], endpoint, clock) as tokens:
        assert await tokens.token("org-1") == "token-1"
        clock.advance(timedelta(seconds=9))
        assert await tokens.token("org-1") == "token-1"
        clock.advance(timedelta(seconds=1))
        assert await tokens.token("org-1") == "token-2"


async def test_concurrent_callers_share_one_exchange(
    vault_addr: str, vault_tokens: dict[str, str], clock: FrozenClock
) -> None:
    endpoint = FakeTokenEndpoint(delay_s=0.2)
    async with source(vault_addr, vault_tokens["messaging"], endpoint, clock) as tokens:
        results = await asyncio.gather(
            *(tokens.token("org-1") for _ in range(10)), tokens.token("org-2")
        )
    assert results == ["token-1"] * 10 + ["token-2"] or results == ["token-2"] * 10 + ["token-1"]
    assert len(endpoint.forms) == 2


# --- what goes wrong, and what the message says to check ------------------------------


def refusing(status: int, body: dict[str, Any]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers={"content-type": "application/json"})

    return handler


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        ("invalid_grant", "clock"),
        ("unauthorized_client", "SERVICE_GRANTS"),
        ("invalid_scope", "SERVICE_GRANTS"),
        ("invalid_request", "org"),
    ],
)
async def test_a_refusal_names_the_error_and_what_to_check(
    vault_addr: str, vault_tokens: dict[str, str], clock: FrozenClock, error: str, hint: str
) -> None:
    body = {"title": "Invalid grant", "status": 400, "detail": "Nope, and why.", "error": error}
    async with source(vault_addr, vault_tokens["messaging"], refusing(400, body), clock) as tokens:
        with pytest.raises(ServiceTokenError) as raised:
            await tokens.token("org-1")
    message = str(raised.value)
    assert "'messaging'" in message
    assert f"400 {error}" in message
    assert "Nope, and why." in message
    assert hint in message
    # Inside a request it becomes a 503: never a call made without a token.
    assert isinstance(raised.value, DependencyUnavailable)
    assert raised.value.status == 503


async def test_an_unreachable_token_endpoint_says_which_url(
    vault_addr: str, vault_tokens: dict[str, str], clock: FrozenClock
) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with source(vault_addr, vault_tokens["messaging"], down, clock) as tokens:
        with pytest.raises(ServiceTokenError, match="identity is running") as raised:
            await tokens.token("org-1")
    assert TOKEN_URL in str(raised.value)


@pytest.mark.parametrize(
    "body",
    [
        {"token_type": "Bearer", "expires_in": 300},
        {"access_token": "t", "token_type": "mac", "expires_in": 300},
        {"access_token": "t", "token_type": "Bearer", "expires_in": "300"},
        {"access_token": "t", "token_type": "Bearer", "expires_in": 0},
    ],
)
async def test_a_malformed_token_response_is_refused(
    vault_addr: str, vault_tokens: dict[str, str], clock: FrozenClock, body: dict[str, Any]
) -> None:
    async with source(vault_addr, vault_tokens["messaging"], refusing(200, body), clock) as tokens:
        with pytest.raises(ServiceTokenError, match="token response"):
            await tokens.token("org-1")


async def test_a_failed_exchange_is_not_cached(
    vault_addr: str, vault_tokens: dict[str, str], clock: FrozenClock
) -> None:
    endpoint = FakeTokenEndpoint()
    calls = 0

    async def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(503, json={"title": "Service unavailable", "detail": "busy"})
        return await endpoint(request)

    async with source(vault_addr, vault_tokens["messaging"], flaky, clock) as tokens:
        with pytest.raises(ServiceTokenError, match="503"):
            await tokens.token("org-1")
        assert await tokens.token("org-1") == "token-1"


async def test_a_vault_token_without_the_key_says_which_policy_to_check(
    vault_addr: str, vault_tokens: dict[str, str], clock: FrozenClock
) -> None:
    endpoint = FakeTokenEndpoint()
    # The patients service's Vault token may not sign as messaging.
    async with source(vault_addr, vault_tokens["patients"], endpoint, clock) as tokens:
        with pytest.raises(ServiceTokenError) as raised:
            await tokens.token("org-1")
    assert "transit/sign/careloop-service-messaging" in str(raised.value)
    assert endpoint.forms == []


# --- Vault: each service signs with its own key only ----------------------------------


def sign(client: hvac.Client, key: str) -> str:
    signature: str = client.secrets.transit.sign_data(
        name=key, hash_input=base64.b64encode(b"probe").decode()
    )["data"]["signature"]
    return signature


def test_each_service_signs_with_its_own_identity_key_only(
    vault_addr: str, vault_tokens: dict[str, str]
) -> None:
    messaging = hvac.Client(url=vault_addr, token=vault_tokens["messaging"])
    assert sign(messaging, "careloop-service-messaging").startswith("vault:v")
    for other in ("careloop-service-patients", "careloop-service-identity"):
        with pytest.raises(Forbidden):
            sign(messaging, other)
    with pytest.raises(Forbidden):
        messaging.secrets.transit.read_key(name="careloop-service-patients")
    with pytest.raises(Forbidden):
        messaging.secrets.transit.rotate_key(name="careloop-service-messaging")

    # Identity reads every service's public keys, to check assertions, and signs with none.
    identity = hvac.Client(url=vault_addr, token=vault_tokens["identity"])
    for service in ("messaging", "patients", "audit"):
        key = identity.secrets.transit.read_key(name=f"careloop-service-{service}")["data"]
        assert key["type"] == "ed25519"
        assert key["exportable"] is False
        assert all("public_key" in version for version in key["keys"].values())
        with pytest.raises(Forbidden):
            sign(identity, f"careloop-service-{service}")
    assert sign(identity, "careloop-service-identity").startswith("vault:v")


def test_bootstrap_keeps_existing_identity_keys(
    vault_addr: str, vault_root_token: str, unique_id: str
) -> None:
    service = f"keep-{unique_id}"
    root = hvac.Client(url=vault_addr, token=vault_root_token)
    bootstrap_vault(vault_addr, vault_root_token, [service])
    before = root.secrets.transit.read_key(name=f"careloop-service-{service}")["data"]["keys"]

    tokens = bootstrap_vault(vault_addr, vault_root_token, [service])

    after = root.secrets.transit.read_key(name=f"careloop-service-{service}")["data"]["keys"]
    assert after == before
    assert sign(hvac.Client(url=vault_addr, token=tokens[service]), f"careloop-service-{service}")
    with pytest.raises(ValueError, match="bad service name"):
        bootstrap_vault(vault_addr, vault_root_token, ["Not a name"])
