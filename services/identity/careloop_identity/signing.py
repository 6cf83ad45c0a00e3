"""Access tokens signed by the Vault transit key; the private key never leaves Vault.

`TokenSigner` builds the JWS around a transit signature and publishes the JWKS of
every key version still valid. `AccessTokenVerifier` checks this service's own
tokens (for the MFA and logout endpoints) with PyJWT against that JWKS.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from uuid import uuid4

import jwt

from careloop_identity.domain.tokens import (
    ALGORITHM,
    AUDIENCE,
    TOKEN_TYPE,
    AccessGrant,
    claims_for,
    compact_jws,
    jwks_from_transit,
    kid_for,
    signing_input,
    vault_signature_bytes,
)
from careloop_kit.auth.jwks import JwksError, parse_jwks
from careloop_kit.clock import Clock
from careloop_kit.problems import Unauthorized
from careloop_kit.vault import Vault, VaultUnavailable

CLOCK_SKEW_S = 30
"""Leeway for `nbf`/`iat` when checking tokens, for clocks that differ slightly."""


class TransitJwksSource:
    """The kit's `JwksSource` read straight from the transit key, so identity's own
    endpoints verify tokens with the same `TokenVerifier` every service uses
    (identity does not call its own HTTP JWKS). Cached for `ttl_s`; a failed read keeps
    the last good keys."""

    def __init__(self, vault: Vault, key_name: str, *, ttl_s: float, clock: Clock) -> None:
        self._vault = vault
        self._key_name = key_name
        self._ttl_s = ttl_s
        self._clock = clock
        self._keys: dict[str, Any] | None = None
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def keys(self) -> dict[str, Any]:
        now = self._clock.now().timestamp()
        if (
            self._keys is not None
            and self._read_at is not None
            and now - self._read_at < self._ttl_s
        ):
            return self._keys
        return await self.refresh()

    async def refresh(self) -> dict[str, Any]:
        async with self._lock:
            try:
                document = jwks_from_transit(
                    self._key_name, await self._vault.read_transit_key(self._key_name)
                )
                self._keys = parse_jwks(document)
                self._read_at = self._clock.now().timestamp()
            except VaultUnavailable as exc:
                if self._keys is None:
                    raise JwksError(f"cannot read the signing keys: {exc}") from exc
            return self._keys


class TokenSigner:
    """Issues EdDSA access tokens with the transit key's latest version."""

    def __init__(
        self,
        vault: Vault,
        *,
        key_name: str,
        issuer: str,
        ttl: timedelta,
        clock: Clock,
    ) -> None:
        self._vault = vault
        self.key_name = key_name
        self.issuer = issuer
        self.ttl = ttl
        self._clock = clock
        self._version: int | None = None

    async def jwks(self) -> dict[str, Any]:
        """Public keys of every version still valid: old tokens verify until they expire."""
        return jwks_from_transit(self.key_name, await self._vault.read_transit_key(self.key_name))

    async def issue(self, grant: AccessGrant) -> str:
        """A signed access token for `grant`."""
        claims = claims_for(
            grant, issuer=self.issuer, now=self._clock.now(), ttl=self.ttl, jti=str(uuid4())
        )
        if self._version is None:
            self._version = int(
                (await self._vault.read_transit_key(self.key_name))["latest_version"]
            )
        # The kid is in the signed header, so it must name the version before signing.
        # Transit signs with its latest version: after an operator rotates the key the
        # first signature reveals the new version, and the token is signed again under it.
        for _ in range(3):
            text = signing_input(kid_for(self.key_name, self._version), claims)
            signature, version = await self._vault.sign(self.key_name, text.encode("ascii"))
            if version == self._version:
                return compact_jws(text, vault_signature_bytes(signature))
            self._version = version
        raise VaultUnavailable("the signing key kept rotating while signing; retry")


class AccessTokenVerifier:
    """Checks access tokens issued by this service: signature, algorithm, type, iss, aud,
    exp and nbf (against the injectable clock)."""

    def __init__(self, signer: TokenSigner, *, clock: Clock) -> None:
        self._signer = signer
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}

    async def _key(self, kid: str) -> jwt.PyJWK:
        if kid not in self._keys:
            jwks = await self._signer.jwks()
            self._keys = {k["kid"]: jwt.PyJWK(k) for k in jwks["keys"]}
        key = self._keys.get(kid)
        if key is None:
            raise Unauthorized("The access token was signed by an unknown key.")
        return key

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or `Unauthorized`."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("The access token is malformed.") from exc
        if header.get("alg") != ALGORITHM or header.get("typ") != TOKEN_TYPE:
            raise Unauthorized("Not an access token of this service.")
        if set(header) - {"alg", "typ", "kid"}:
            raise Unauthorized("The access token header carries unexpected parameters.")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Unauthorized("The access token names no key.")
        key = await self._key(kid)
        try:
            # PyJWT reads the wall clock; time claims are checked below with ours.
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=self._signer.issuer,
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["exp", "iat", "nbf", "sub", "sid", "org", "jti"],
                },
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"The access token is invalid: {exc}.") from exc
        now = self._clock.now().timestamp()
        if now >= float(claims["exp"]):
            raise Unauthorized("The access token has expired.")
        if now + CLOCK_SKEW_S < float(claims["nbf"]):
            raise Unauthorized("The access token is not valid yet.")
        return claims
