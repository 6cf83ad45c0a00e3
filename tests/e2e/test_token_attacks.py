"""The JWT attack matrix against real identity tokens, at the gateway and at a service.

Identity, patients and the gateway run as they do in production (identity and
patients on real ports, verifying against identity's published JWKS). Each forged or
misused token must get 401 from the gateway and from the patients service called
directly; a genuine token must get through.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import hvac
import pytest
import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import careloop_gateway
import careloop_identity
import careloop_patients
from careloop_cli.demo import AdminSession, create_organization
from careloop_gateway.app import create_app as create_gateway
from careloop_gateway.settings import GatewaySettings
from careloop_identity.app import create_app as create_identity
from careloop_identity.settings import IdentitySettings
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.infra.openbao import bootstrap_vault
from careloop_kit.infra.ports import free_port
from careloop_kit.testing.apps import running_app
from careloop_patients.app import create_app as create_patients
from careloop_patients.settings import PatientsSettings

pytestmark = pytest.mark.e2e

BOOTSTRAP = {"X-Bootstrap-Token": "e2e-bootstrap-token"}
SIGNING_KEY = "careloop-identity-signing"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (
        json.loads(base64.urlsafe_b64decode(pad(head))),
        json.loads(base64.urlsafe_b64decode(pad(body))),
    )


def compact(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Run an ASGI app on a real port in this event loop."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def platform(
    make_database: Callable[[str], Awaitable[str]],
    kafka_bootstrap: str,
    vault_addr: str,
    vault_root_token: str,
    vault_tokens: dict[str, str],
    topic_prefix: str,
) -> AsyncIterator[dict[str, Any]]:
    dsns = {name: await make_database(name) for name in ("identity", "patients", "gateway")}
    for name, package in (
        ("identity", careloop_identity),
        ("patients", careloop_patients),
        ("gateway", careloop_gateway),
    ):
        await upgrade_async(Path(package.__file__).parent / "migrations", dsns[name])
    gateway_token = bootstrap_vault(vault_addr, vault_root_token, ["gateway"])["gateway"]
    common: dict[str, Any] = {
        "environment": "test",
        "kafka_bootstrap": kafka_bootstrap,
        "vault_addr": vault_addr,
        "topic_prefix": topic_prefix,
        "log_json": False,
    }
    identity_app = create_identity(
        IdentitySettings(
            database_url=dsns["identity"],
            vault_token=vault_tokens["identity"],
            bootstrap_token=BOOTSTRAP["X-Bootstrap-Token"],
            **common,
        )
    )
    async with serving(identity_app) as identity_url:
        jwks_url = f"{identity_url}/.well-known/jwks.json"
        patients_app = create_patients(
            PatientsSettings(
                database_url=dsns["patients"],
                vault_token=vault_tokens["patients"],
                auth_jwks_url=jwks_url,
                **common,
            )
        )
        async with serving(patients_app) as patients_url:
            gateway_app = create_gateway(
                GatewaySettings(
                    database_url=dsns["gateway"],
                    vault_token=gateway_token,
                    auth_jwks_url=jwks_url,
                    routes={"patients": patients_url, "identity": identity_url},
                    **common,
                )
            )
            async with running_app(gateway_app) as gateway:
                yield {
                    "identity": identity_url,
                    "patients": patients_url,
                    "gateway": gateway,
                    "vault": hvac.Client(url=vault_addr, token=vault_root_token),
                }


def _new_admin(identity_url: str) -> AdminSession:
    with httpx.Client(base_url=identity_url, timeout=30) as client:
        return create_organization(
            client,
            BOOTSTRAP["X-Bootstrap-Token"],
            "Attack Lab (synthetic)",
            f"admin-{uuid.uuid4().hex[:8]}@example.org",
        )


async def sign_in(identity_url: str) -> tuple[dict[str, Any], str]:
    """A front-desk user of a new organization, signed in: (login response, location)."""
    # The identity app serves in this event loop: the blocking admin set-up runs aside.
    admin = await asyncio.to_thread(_new_admin, identity_url)
    async with httpx.AsyncClient(base_url=identity_url, headers=admin.headers) as client:
        location = (
            await client.post(
                f"/organizations/{admin.org_id}/locations",
                json={"name": "Clinic (synthetic)", "time_zone": "America/Chicago"},
            )
        ).json()
        email, password = f"desk-{uuid.uuid4().hex[:8]}@example.org", "correct-Horse-42-battery"
        created = await client.post(
            f"/organizations/{admin.org_id}/users",
            json={
                "email": email,
                "display_name": "Desk (synthetic)",
                "password": password,
                "roles": ["front_desk"],
                "locations": [location["id"]],
            },
        )
        assert created.status_code == 201, created.text
        login = await client.post(
            "/auth/login", json={"org_id": admin.org_id, "email": email, "password": password}
        )
        assert login.status_code == 200, login.text
        return login.json(), location["id"]


def forgeries(
    platform: dict[str, Any], genuine: str, refresh: str, published_x: str
) -> dict[str, str]:
    header, claims = segments(genuine)
    vault: hvac.Client = platform["vault"]

    def real_key(message: bytes) -> bytes:
        # The identity's own transit key, through the root token: valid signatures over
        # claims identity would never issue.
        signed = vault.secrets.transit.sign_data(
            name=SIGNING_KEY, hash_input=base64.b64encode(message).decode()
        )["data"]["signature"]
        return base64.b64decode(signed.split(":")[2])

    public_bytes = base64.urlsafe_b64decode(published_x + "=" * (-len(published_x) % 4))
    foreign_ed = Ed25519PrivateKey.generate()
    foreign_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    foreign_jwk = {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(
            foreign_ed.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        ),
    }
    now = int(time.time())
    return {
        "alg none": compact({**header, "alg": "none"}, claims, lambda _: b""),
        "HS256 keyed with the public key": compact(
            {**header, "alg": "HS256"},
            claims,
            lambda m: hmac.new(public_bytes, m, hashlib.sha256).digest(),
        ),
        "RS256 from a foreign key": compact(
            {**header, "alg": "RS256"},
            claims,
            lambda m: foreign_rsa.sign(m, padding.PKCS1v15(), hashes.SHA256()),
        ),
        "foreign Ed25519 key, real kid": compact(header, claims, foreign_ed.sign),
        "injected jwk header": compact({**header, "jwk": foreign_jwk}, claims, foreign_ed.sign),
        "injected jku header": compact(
            {**header, "jku": "http://attacker.invalid/jwks.json"}, claims, foreign_ed.sign
        ),
        "wrong audience (real key)": compact(header, {**claims, "aud": "elsewhere"}, real_key),
        "expired (real key)": compact(
            header, {**claims, "iat": now - 900, "nbf": now - 900, "exp": now - 600}, real_key
        ),
        "refresh token as access token": refresh,
        "tampered claims": genuine.split(".")[0]
        + "."
        + b64url(json.dumps({**claims, "loc": ["*"]}).encode())
        + "."
        + genuine.split(".")[2],
    }


async def test_every_forged_or_misused_token_is_refused_by_gateway_and_service(
    platform: dict[str, Any],
) -> None:
    login, _ = await sign_in(platform["identity"])
    genuine = login["access_token"]
    async with httpx.AsyncClient(base_url=platform["identity"]) as client:
        published = (await client.get("/.well-known/jwks.json")).json()["keys"]
    kid = segments(genuine)[0]["kid"]
    published_x = next(k["x"] for k in published if k["kid"] == kid)
    gateway: httpx.AsyncClient = platform["gateway"]
    path = "/patients?phone=5550100000"

    async def both(token: str) -> tuple[int, int]:
        headers = {"Authorization": f"Bearer {token}"}
        via_gateway = await gateway.get(f"/api/v1/patients{path}", headers=headers)
        async with httpx.AsyncClient(base_url=platform["patients"]) as direct:
            to_service = await direct.get(path, headers=headers)
        return via_gateway.status_code, to_service.status_code

    assert await both(genuine) == (200, 200)
    outcomes = {
        name: await both(token)
        for name, token in forgeries(platform, genuine, login["refresh_token"], published_x).items()
    }

    assert {name: o for name, o in outcomes.items() if o != (401, 401)} == {}


async def test_a_token_stops_working_everywhere_after_logout(platform: dict[str, Any]) -> None:
    login, _ = await sign_in(platform["identity"])
    headers = {"Authorization": f"Bearer {login['access_token']}"}
    gateway: httpx.AsyncClient = platform["gateway"]
    assert (
        await gateway.get("/api/v1/patients/patients?phone=5550100000", headers=headers)
    ).status_code == 200

    logout = await gateway.post("/api/v1/identity/auth/logout", headers=headers)
    assert logout.status_code == 204, logout.text

    # The logout reaches every verifier through the careloop.identity topic.
    statuses: tuple[int, int] = (0, 0)
    for _ in range(100):
        via_gateway = await gateway.get("/api/v1/patients/patients?phone=1", headers=headers)
        async with httpx.AsyncClient(base_url=platform["patients"]) as direct:
            to_service = await direct.get("/patients?phone=1", headers=headers)
        statuses = (via_gateway.status_code, to_service.status_code)
        if statuses == (401, 401):
            break
        await asyncio.sleep(0.2)
    assert statuses == (401, 401)
