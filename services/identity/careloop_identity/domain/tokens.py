"""The shape of access tokens (compact JWS, EdDSA) and of the published JWKS.

The signature itself comes from the Vault transit key; this module only builds
the signing input, assembles the token and converts public keys.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

AUDIENCE = "careloop"
TOKEN_TYPE = "at+jwt"  # noqa: S105 (the JWT `typ`, not a secret)
ALGORITHM = "EdDSA"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def kid_for(key_name: str, version: int) -> str:
    return f"{key_name}:{version}"


@dataclass(frozen=True)
class BreakGlassEntry:
    """An active break-glass grant carried in the `bg` claim."""

    patient_id: str
    expires_at: datetime
    grant_id: str


@dataclass(frozen=True)
class AccessGrant:
    """Who the token speaks for, within one session."""

    user_id: str
    org_id: str
    session_id: str
    actor_type: str
    roles: tuple[str, ...]
    locations: tuple[str, ...]
    patient_id: str | None
    amr: tuple[str, ...]
    break_glass: tuple[BreakGlassEntry, ...] = ()
    scope: str | None = None
    """Partner tokens: the granted scopes, space separated (claim `scope`)."""
    rate_limit: int | None = None
    """Partner tokens: requests per minute the gateway allows (claim `rl`)."""


def claims_for(
    grant: AccessGrant, *, issuer: str, now: datetime, ttl: timedelta, jti: str
) -> dict[str, Any]:
    """The claims of an access token for `grant`, issued at `now`."""
    iat = int(now.timestamp())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": grant.user_id,
        "exp": iat + int(ttl.total_seconds()),
        "iat": iat,
        "nbf": iat,
        "jti": jti,
        "sid": grant.session_id,
        "org": grant.org_id,
        "act": grant.actor_type,
        "roles": list(grant.roles),
        "loc": list(grant.locations),
        "amr": list(grant.amr),
    }
    if grant.patient_id is not None:
        claims["pat"] = grant.patient_id
    if grant.break_glass:
        claims["bg"] = [
            {"pat": e.patient_id, "exp": int(e.expires_at.timestamp()), "gid": e.grant_id}
            for e in grant.break_glass
        ]
    if grant.scope is not None:
        claims["scope"] = grant.scope
    if grant.rate_limit is not None:
        claims["rl"] = grant.rate_limit
    return claims


def _segment(value: Mapping[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":"), sort_keys=False).encode())


def signing_input(kid: str, claims: Mapping[str, Any]) -> str:
    """`b64url(header).b64url(claims)`, the ASCII bytes the key signs."""
    header = {"alg": ALGORITHM, "typ": TOKEN_TYPE, "kid": kid}
    return f"{_segment(header)}.{_segment(claims)}"


def vault_signature_bytes(vault_signature: str) -> bytes:
    """Raw signature bytes of a transit signature `vault:vN:<std base64>`."""
    parts = vault_signature.split(":")
    if len(parts) != 3 or parts[0] != "vault":
        raise ValueError("not a transit signature")
    return base64.b64decode(parts[2])


def compact_jws(signing_input_text: str, signature: bytes) -> str:
    return f"{signing_input_text}.{b64url(signature)}"


def jwk_for(kid: str, public_key_b64: str) -> dict[str, str]:
    """A JWK for an Ed25519 public key given as standard base64 of its 32 raw bytes."""
    raw = base64.b64decode(public_key_b64)
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key has 32 bytes")
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(raw),
        "kid": kid,
        "alg": ALGORITHM,
        "use": "sig",
    }


def jwks_from_transit(key_name: str, key_data: Mapping[str, Any]) -> dict[str, Any]:
    """The JWKS of every key version still valid, from transit's `read key` response data."""
    versions: Mapping[str, Any] = key_data.get("keys") or {}
    floor = int(key_data.get("min_decryption_version") or 1)
    keys = [
        jwk_for(kid_for(key_name, int(version)), str(entry["public_key"]))
        for version, entry in sorted(versions.items(), key=lambda item: int(item[0]))
        if int(version) >= floor and isinstance(entry, Mapping) and entry.get("public_key")
    ]
    return {"keys": keys}
