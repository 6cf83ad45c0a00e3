"""Where verifiers find identity's public signing keys: a JWKS document.

Only Ed25519 (`kty` OKP, `crv` Ed25519) signing keys with a `kid` are taken;
anything else in the document is ignored, so a key of another type can never
be used to check a signature.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import ssl
from collections.abc import Mapping
from typing import Any, Protocol

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from careloop_kit.clock import Clock, SystemClock

log = logging.getLogger(__name__)

Keys = Mapping[str, Ed25519PublicKey]


class JwksError(Exception):
    """The JWKS document could not be fetched or read."""


class JwksSource(Protocol):
    """Public keys by `kid`."""

    async def keys(self) -> Keys:
        """The current keys (cached where the source caches)."""
        ...

    async def refresh(self) -> Keys:
        """Re-read the keys now (a verifier calls this for an unknown `kid`)."""
        ...


def b64url_decode(value: str) -> bytes:
    """Strict unpadded base64url (RFC 7515 section 2)."""
    if not isinstance(value, str) or "=" in value:
        raise ValueError("not unpadded base64url")
    try:
        raw = value.encode("ascii")
        decoded = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise ValueError("not base64url") from exc
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != raw:
        raise ValueError("not canonical base64url")
    return decoded


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(key: Ed25519PublicKey, kid: str) -> dict[str, str]:
    """The JWK of an Ed25519 public key."""
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url_encode(raw),
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
    }


def parse_jwks(document: Any) -> dict[str, Ed25519PublicKey]:
    """Ed25519 signing keys of a JWKS document by `kid`; other keys are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError("JWKS document must be an object with a 'keys' list")
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid")
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or not isinstance(kid, str):
            continue
        if jwk.get("alg", "EdDSA") != "EdDSA" or jwk.get("use", "sig") != "sig":
            continue
        try:
            raw = b64url_decode(jwk.get("x", ""))
            if len(raw) != 32:
                continue
            keys[kid] = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            log.warning("skipping malformed JWK %s", kid)
    return keys


class StaticJwksSource:
    """Keys from a document held in memory (identity itself, and tests)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._keys = parse_jwks(dict(document))
        self.refreshes = 0

    def replace(self, document: Mapping[str, Any]) -> None:
        """Swap the document (key rotation in identity or in a test)."""
        self._keys = parse_jwks(dict(document))

    async def keys(self) -> Keys:
        return dict(self._keys)

    async def refresh(self) -> Keys:
        self.refreshes += 1
        return dict(self._keys)


class HttpJwksSource:
    """Keys fetched from identity's `/.well-known/jwks.json`, cached for `ttl_s`.

    A failed fetch keeps serving the last good keys (tokens keep verifying while
    identity restarts); with no keys ever fetched it raises `JwksError`.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float = 300,
        timeout_s: float = 5,
        clock: Clock | None = None,
        client: httpx.AsyncClient | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._verify = verify
        self._clock = clock or SystemClock()
        self._client = client
        self._keys: dict[str, Ed25519PublicKey] | None = None
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def keys(self) -> Keys:
        now = self._clock.now().timestamp()
        fresh = self._fetched_at is not None and now - self._fetched_at < self.ttl_s
        if self._keys is not None and fresh:
            return self._keys
        return await self.refresh()

    async def refresh(self) -> Keys:
        async with self._lock:
            try:
                document = await self._fetch()
                self._keys = parse_jwks(document)
                self._fetched_at = self._clock.now().timestamp()
            except (httpx.HTTPError, JwksError, ValueError) as exc:
                if self._keys is None:
                    raise JwksError(f"cannot read JWKS from {self.url}: {exc}") from exc
                log.warning("JWKS refresh from %s failed, keeping cached keys: %s", self.url, exc)
            return self._keys

    async def _fetch(self) -> Any:
        self.fetches += 1
        if self._client is not None:
            response = await self._client.get(self.url, timeout=self._timeout_s)
        else:
            async with httpx.AsyncClient(timeout=self._timeout_s, verify=self._verify) as client:
                response = await client.get(self.url)
        response.raise_for_status()
        return response.json()
