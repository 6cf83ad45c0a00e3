"""Service identities: how a Careloop service gets an access token of its own.

A service proves who it is with a short JWT assertion signed by its own Vault transit
key (`careloop-service-<name>`, ed25519; its Vault policy may sign with that key only)
and trades it at identity's token endpoint for an access token (RFC 7523 JWT-bearer
grant). There is no client secret to share, rotate or leak: the private key never leaves
Vault, and identity checks the signature against the key's public versions.

The assertion:

- header `{"alg": "EdDSA", "typ": "JWT", "kid": "careloop-service-<name>:<version>"}`;
- claims `iss` = `sub` = `service:<name>`, `aud` = identity's issuer identifier
  (`careloop-identity`, the `iss` of the tokens it issues), `iat`, `exp` (at most
  60 s later) and a fresh `jti` (identity refuses a `jti` it has seen).

The audience is identity's issuer identifier, not the token endpoint URL: the URL a
service uses depends on the network path (direct, through the gateway, a cluster DNS
name), while the issuer is one stable string identity already knows; a single issuer
string is also what the update of RFC 7523 (draft-ietf-oauth-rfc7523bis) requires, to
close audience-injection attacks.

`ServiceTokenSource.token(org)` returns the bearer token for calls made on behalf of one
organization (a service token is per tenant), cached until shortly before it expires;
concurrent callers for the same organization share one exchange.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from uuid import uuid4

import httpx

from careloop_contracts.platform import SERVICE_KEY_PREFIX as PLATFORM_SERVICE_KEY_PREFIX
from careloop_kit.auth.jwks import b64url_encode
from careloop_kit.auth.permissions import service_subject
from careloop_kit.auth.tokens import DEFAULT_ISSUER
from careloop_kit.clock import Clock, SystemClock
from careloop_kit.errors import DependencyUnavailable
from careloop_kit.vault import Vault, VaultUnavailable

JWT_BEARER_GRANT_TYPE: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SERVICE_KEY_PREFIX: Final = PLATFORM_SERVICE_KEY_PREFIX
"""Transit key of a service identity: `careloop-service-<name>` (see
`careloop_kit.infra.openbao.bootstrap_vault`, which provisions it)."""
ASSERTION_TYPE: Final = "JWT"
ASSERTION_ALGORITHM: Final = "EdDSA"
MAX_ASSERTION_LIFETIME_S: Final = 60
DEFAULT_ASSERTION_LIFETIME_S: Final = 30
DEFAULT_REFRESH_MARGIN_S: Final = 30.0

_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


class ServiceTokenError(DependencyUnavailable):
    """A service token could not be obtained. The message says what to check; a request
    that needed the token fails with 503 rather than calling without one."""

    title = "Service token unavailable"
    slug = "service-token-unavailable"


def service_key_name(service: str) -> str:
    """The Vault transit key that proves `service`'s identity."""
    if not _SERVICE_NAME.match(service):
        raise ValueError(f"bad service name {service!r}: lowercase letters, digits and '-'")
    return f"{SERVICE_KEY_PREFIX}{service}"


def _segment(value: Mapping[str, Any]) -> str:
    return b64url_encode(json.dumps(value, separators=(",", ":")).encode())


def _raw_signature(vault_signature: str) -> bytes:
    """The raw signature bytes of a transit signature `vault:vN:<standard base64>`."""
    parts = vault_signature.split(":")
    if len(parts) != 3 or parts[0] != "vault":
        raise ServiceTokenError("Vault returned a signature in an unknown format.")
    try:
        return base64.b64decode(parts[2], validate=True)
    except binascii.Error:
        raise ServiceTokenError("Vault returned a signature in an unknown format.") from None


class ServiceCredentials:
    """Signs service-identity assertions with the service's own Vault transit key."""

    def __init__(
        self,
        vault: Vault,
        service: str,
        *,
        audience: str = DEFAULT_ISSUER,
        lifetime_s: int = DEFAULT_ASSERTION_LIFETIME_S,
        clock: Clock | None = None,
    ) -> None:
        if not 0 < lifetime_s <= MAX_ASSERTION_LIFETIME_S:
            raise ValueError(f"an assertion lives 1 to {MAX_ASSERTION_LIFETIME_S} seconds")
        self.service = service
        self.key_name = service_key_name(service)
        self.subject = service_subject(service)
        self.audience = audience
        self.lifetime_s = lifetime_s
        self._vault = vault
        self._clock = clock or SystemClock()
        # The kid names the key version and is part of what is signed, so it must be
        # guessed before signing; transit reports the version it used, and a wrong guess
        # (only after an operator rotated the key) is corrected by signing once more.
        self._version = 1
        self._lock = asyncio.Lock()

    def claims(self) -> dict[str, Any]:
        """Fresh claims of one assertion."""
        iat = int(self._clock.now().timestamp())
        return {
            "iss": self.subject,
            "sub": self.subject,
            "aud": self.audience,
            "iat": iat,
            "exp": iat + self.lifetime_s,
            "jti": str(uuid4()),
        }

    async def assertion(self) -> str:
        """A compact JWS assertion, signed in Vault with this service's key."""
        claims = self.claims()
        async with self._lock:
            for _ in range(3):
                header = {
                    "alg": ASSERTION_ALGORITHM,
                    "typ": ASSERTION_TYPE,
                    "kid": f"{self.key_name}:{self._version}",
                }
                signing_input = f"{_segment(header)}.{_segment(claims)}"
                try:
                    signature, version = await self._vault.sign(
                        self.key_name, signing_input.encode("ascii")
                    )
                except VaultUnavailable as exc:
                    raise ServiceTokenError(
                        f"Could not sign the service assertion of {self.service!r} with the "
                        f"Vault transit key {self.key_name!r}: check that Vault is reachable, "
                        "that this service's Vault token is valid, and that its policy "
                        f"allows update on transit/sign/{self.key_name} "
                        f"(bootstrap_vault provisions it). Vault said: {exc}"
                    ) from exc
                if version == self._version:
                    return f"{signing_input}.{b64url_encode(_raw_signature(signature))}"
                self._version = version
        raise ServiceTokenError(
            f"The Vault key {self.key_name!r} kept rotating while signing; retry."
        )


@dataclass(frozen=True)
class _Cached:
    token: str
    refresh_at: float


class ServiceTokenSource:
    """Access tokens of one service, per organization, from identity's token endpoint.

    Build one per service process (in the lifespan, with the service's `Vault`), and call
    `await source.token(org_id)` before each call to another service; it returns the
    bearer token string. Tokens are reused until `refresh_margin_s` before they expire.
    """

    def __init__(
        self,
        vault: Vault,
        service: str,
        token_url: str,
        *,
        clock: Clock | None = None,
        audience: str = DEFAULT_ISSUER,
        assertion_lifetime_s: int = DEFAULT_ASSERTION_LIFETIME_S,
        refresh_margin_s: float = DEFAULT_REFRESH_MARGIN_S,
        http: httpx.AsyncClient | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self._clock = clock or SystemClock()
        self.credentials = ServiceCredentials(
            vault,
            service,
            audience=audience,
            lifetime_s=assertion_lifetime_s,
            clock=self._clock,
        )
        self.token_url = token_url
        self.refresh_margin_s = refresh_margin_s
        self._http = http or httpx.AsyncClient(timeout=timeout_s)
        self._owns_http = http is None
        self._cache: dict[tuple[str, str | None], _Cached] = {}
        self._locks: dict[tuple[str, str | None], asyncio.Lock] = {}

    @property
    def service(self) -> str:
        return self.credentials.service

    async def token(self, org: str, *, scope: str | None = None) -> str:
        """A bearer token of this service acting for organization `org` (the token's
        `org` claim: a service token is valid in one tenant only). `scope`, when given,
        must be a subset of the service's grants, or identity refuses it."""
        key = (org, scope)
        cached = self._fresh(key)
        if cached is not None:
            return cached
        # One exchange per (org, scope) at a time: the others wait and take its result,
        # instead of each spending a Vault signature and a token request.
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._fresh(key)
            if cached is not None:
                return cached
            token, expires_in = await self._exchange(org, scope)
            now = self._clock.now().timestamp()
            # Short tokens are refreshed at half their life, so a margin longer than
            # the token never makes every call an exchange.
            margin = min(self.refresh_margin_s, expires_in / 2)
            self._cache[key] = _Cached(token, now + expires_in - margin)
            return token

    def forget(self, org: str, *, scope: str | None = None) -> None:
        """Drop the cached token, e.g. after the called service answered 401."""
        self._cache.pop((org, scope), None)

    def _fresh(self, key: tuple[str, str | None]) -> str | None:
        cached = self._cache.get(key)
        if cached is None or self._clock.now().timestamp() >= cached.refresh_at:
            return None
        return cached.token

    async def _exchange(self, org: str, scope: str | None) -> tuple[str, float]:
        form = {
            "grant_type": JWT_BEARER_GRANT_TYPE,
            "assertion": await self.credentials.assertion(),
            "org": org,
        }
        if scope is not None:
            form["scope"] = scope
        try:
            response = await self._http.post(
                self.token_url, data=form, headers={"Accept": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise ServiceTokenError(
                f"Could not reach identity's token endpoint {self.token_url} to get a token "
                f"for service {self.service!r}: check the token URL setting and that identity "
                f"is running ({type(exc).__name__}: {exc})."
            ) from exc
        if response.status_code != 200:
            raise ServiceTokenError(self._refusal(response))
        try:
            body = response.json()
            token = body["access_token"]
            expires_in = body["expires_in"]
            token_type = body["token_type"]
        except (ValueError, KeyError, TypeError):
            raise ServiceTokenError(
                f"Identity's token endpoint {self.token_url} answered 200 without a token "
                "response (access_token, token_type, expires_in): check the token URL."
            ) from None
        if (
            not isinstance(token, str)
            or not token
            or not isinstance(token_type, str)
            or token_type.lower() != "bearer"
            or not isinstance(expires_in, int | float)
            or isinstance(expires_in, bool)
            or expires_in <= 0
        ):
            raise ServiceTokenError(
                f"Identity's token endpoint {self.token_url} sent a malformed token response."
            )
        return token, float(expires_in)

    def _refusal(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        code = body.get("error") or body.get("title") or "no error code"
        detail = body.get("detail") or body.get("error_description") or response.reason_phrase
        hint = {
            "invalid_grant": (
                "check that this host's clock is right, that the audience "
                f"{self.credentials.audience!r} is identity's token issuer, and that the "
                f"key {self.credentials.key_name!r} was not rotated past its minimum version"
            ),
            "unauthorized_client": (
                f"check that {self.service!r} is listed in SERVICE_GRANTS "
                "(careloop_kit.auth.permissions)"
            ),
            "invalid_scope": (f"ask only for permissions {self.service!r} holds in SERVICE_GRANTS"),
            "invalid_request": "check the org id: it must name an existing organization",
            "unsupported_grant_type": (
                "this identity does not accept the JWT-bearer grant; check the token URL"
            ),
        }.get(str(code), "check the token URL and identity's logs")
        return (
            f"Identity refused a token for service {self.service!r} "
            f"({response.status_code} {code}): {detail}. Hint: {hint}."
        )

    async def aclose(self) -> None:
        """Close the HTTP client, if this source made it."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> ServiceTokenSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
