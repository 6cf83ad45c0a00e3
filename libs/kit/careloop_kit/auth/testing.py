"""Test helpers: an in-memory signing key that mints access tokens the way
identity does, and a verifier that trusts it. No OpenBao needed.

    issuer = TestTokenIssuer(clock)
    verifier = issuer.verifier()
    token = issuer.mint(roles=["front_desk"], loc=["loc-1"])
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from uuid import uuid4

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from careloop_kit.auth.jwks import StaticJwksSource, b64url_encode, public_jwk
from careloop_kit.auth.revocation import RevokedSessions
from careloop_kit.auth.tokens import (
    ACCESS_TOKEN_TYPE,
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    SIGNING_KEY_NAME,
    TokenVerifier,
)
from careloop_kit.clock import Clock, FrozenClock

_OMIT = object()


def encode_segment(value: Mapping[str, Any]) -> str:
    """base64url of compact JSON."""
    return b64url_encode(json.dumps(value, separators=(",", ":")).encode())


class TestTokenIssuer:
    """Signs access tokens with an Ed25519 key held in memory."""

    __test__ = False  # not a pytest test class

    def __init__(self, clock: Clock | None = None, *, version: int = 1) -> None:
        self.clock = clock or FrozenClock()
        self.key = Ed25519PrivateKey.generate()
        self.kid = f"{SIGNING_KEY_NAME}:{version}"
        self.jwks = StaticJwksSource(self.jwks_document())

    def jwks_document(self) -> dict[str, Any]:
        return {"keys": [public_jwk(self.key.public_key(), self.kid)]}

    def verifier(self, *, revoked: RevokedSessions | None = None, **options: Any) -> TokenVerifier:
        return TokenVerifier(
            self.jwks,
            clock=self.clock,
            revoked=revoked if revoked is not None else RevokedSessions(clock=self.clock),
            **options,
        )

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Default staff claims, with `overrides` applied (a value of `OMIT` drops it)."""
        now = int(self.clock.now().timestamp())
        claims: dict[str, Any] = {
            "iss": DEFAULT_ISSUER,
            "aud": DEFAULT_AUDIENCE,
            "sub": "user-1",
            "exp": now + 300,
            "iat": now,
            "nbf": now,
            "jti": str(uuid4()),
            "sid": "session-1",
            "org": "org-1",
            "act": "user",
            "roles": ["front_desk"],
            "loc": ["loc-1"],
            "amr": ["pwd"],
        }
        return _overridden(claims, overrides)

    def header(self, **overrides: Any) -> dict[str, Any]:
        header = {"alg": "EdDSA", "typ": ACCESS_TOKEN_TYPE, "kid": self.kid}
        return _overridden(header, overrides)

    def sign(
        self,
        header: Mapping[str, Any],
        claims: Mapping[str, Any],
        key: Ed25519PrivateKey | None = None,
    ) -> str:
        """A compact JWS of exactly this header and these claims."""
        signing_input = f"{encode_segment(header)}.{encode_segment(claims)}"
        signature = (key or self.key).sign(signing_input.encode("ascii"))
        return f"{signing_input}.{b64url_encode(signature)}"

    def mint(self, *, header: Mapping[str, Any] | None = None, **overrides: Any) -> str:
        """A valid access token (override claims by keyword)."""
        return self.sign(header or self.header(), self.claims(**overrides))


OMIT: Any = _OMIT


def _overridden(values: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with `overrides` applied in place; a value of `OMIT` drops its name."""
    for name, value in overrides.items():
        if value is OMIT:
            values.pop(name, None)
        else:
            values[name] = value
    return values
