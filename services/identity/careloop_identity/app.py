"""Composition root of the identity service."""

from __future__ import annotations

import base64
import secrets
from datetime import timedelta

from argon2 import PasswordHasher
from fastapi import FastAPI

from careloop_identity.api.admin import router as admin_router
from careloop_identity.api.auth import router as auth_router
from careloop_identity.api.clients import router as clients_router
from careloop_identity.api.oauth import router as oauth_router
from careloop_identity.settings import IdentitySettings
from careloop_identity.signing import (
    AccessTokenVerifier,
    TokenSigner,
    TransitJwksSource,
)
from careloop_identity.store.tables import metadata, platform
from careloop_kit.audit import AUDIT_RECORDER_KEY
from careloop_kit.clock import Clock, SystemClock
from careloop_kit.service import Runtime, ServiceSpec, create_service_app
from careloop_kit.vault import Vault

SERVICE = "identity"


def build_spec(settings: IdentitySettings) -> ServiceSpec:
    async def on_startup(runtime: Runtime) -> None:
        secret = await runtime.vault.read_secret(settings.totp_key_secret_path)
        totp_key = base64.b64decode(secret["key"])
        if len(totp_key) != 32:
            raise RuntimeError(f"{settings.totp_key_secret_path} must hold a 32-byte key")
        hasher = PasswordHasher()
        signer = TokenSigner(
            runtime.vault,
            key_name=settings.signing_key,
            issuer=settings.token_issuer,
            ttl=timedelta(seconds=settings.access_token_ttl_s),
            clock=runtime.clock,
        )
        runtime.state.update(
            settings=settings,
            totp_key=totp_key,
            hasher=hasher,
            # Unknown accounts are checked against this, so they cost as much as a real one.
            dummy_hash=hasher.hash(secrets.token_urlsafe(16)),
            signer=signer,
            verifier=AccessTokenVerifier(signer, clock=runtime.clock),
            audit=runtime.state[AUDIT_RECORDER_KEY],
        )

    return ServiceSpec(
        name=SERVICE,
        description=(
            "Organizations, locations, users and roles; sign-in with argon2id passwords, "
            "lockout and TOTP; EdDSA access tokens signed in OpenBao, published as JWKS."
        ),
        metadata=metadata,
        tables=platform,
        routers=[admin_router, auth_router, clients_router, oauth_router],
        on_startup=on_startup,
        # Administration endpoints take org admins' access tokens through the kit's
        # `require()`, like every other service.
        verifies_tokens=True,
    )


def create_app(settings: IdentitySettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """The identity API with its runtime lifespan."""
    settings = settings or IdentitySettings()
    the_clock = clock or SystemClock()
    jwks = TransitJwksSource(
        Vault.from_settings(settings),
        settings.signing_key,
        ttl_s=settings.auth_jwks_ttl_s,
        clock=the_clock,
    )
    return create_service_app(build_spec(settings), settings, clock=the_clock, jwks=jwks)
