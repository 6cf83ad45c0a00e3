"""Service identities: a Careloop service proves who it is with a JWT assertion
signed by its own Vault transit key (RFC 7523 JWT-bearer grant), never a shared
secret, and gets a short access token (`act: service`, `sub: service:<name>`).

The token endpoint (`careloop_identity.api.oauth`) hands grant type
`urn:ietf:params:oauth:grant-type:jwt-bearer` to `exchange_service_assertion`, with the
form fields it parsed.

What is checked, in order (RFC 7523 section 3, RFC 8725):

1. the assertion is a compact JWS whose header is exactly `alg` (`EdDSA` only), `typ`
   (`JWT`, so an access token, typed `at+jwt`, is never taken for an assertion) and
   `kid`; headers that carry or point at keys (`jwk`, `jku`, `x5u`, ...) and `crit` are
   refused, and the key comes only from Vault;
2. `iss` = `sub` = `service:<name>`, and `<name>` holds grants in `SERVICE_GRANTS`;
3. `kid` names a version of that service's own key (`careloop-service-<name>:<n>`), and
   the Ed25519 signature verifies with its public key, read from transit;
4. `aud` is identity's issuer identifier (`token_issuer`), one string; `iat`/`exp`
   against the injectable clock, a lifetime of at most 60 s, `ASSERTION_LEEWAY_S` of
   clock skew;
5. the `jti` was never exchanged before (table `service_assertion`, kept until the
   assertion expires);
6. the form field `org` names an existing organization: a service token acts for one
   tenant.

Every issued token and every refusal is audited (`ServiceToken`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, cast
from uuid import uuid4

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from careloop_identity.domain.tokens import AccessGrant
from careloop_identity.signing import TransitJwksSource
from careloop_identity.store.repository import IdentityRepository
from careloop_identity.store.service_assertions import ServiceAssertionRepository
from careloop_identity.store.tables import MAX_JTI_LENGTH
from careloop_identity.usecases.common import (
    AUDIT_DETAIL,
    UNKNOWN_ACTOR,
    RequestMeta,
    identity_entry,
    settings_of,
    signer_of,
)
from careloop_kit.audit import AuditEntry
from careloop_kit.auth import ALL_LOCATIONS, Principal
from careloop_kit.auth.jwks import JwksError, b64url_decode
from careloop_kit.auth.permissions import SERVICE_GRANTS, service_of, service_subject
from careloop_kit.auth.service_identity import (
    ASSERTION_ALGORITHM,
    ASSERTION_TYPE,
    MAX_ASSERTION_LIFETIME_S,
    service_key_name,
)
from careloop_kit.auth.tokens import json_segment
from careloop_kit.clock import Clock
from careloop_kit.context import StepContext, own_transaction
from careloop_kit.problems import DependencyUnavailable, ProblemError
from careloop_kit.service import Runtime
from careloop_kit.vault import Vault

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"

ASSERTION_LEEWAY_S: Final = 10
"""Clock skew tolerated between a service and identity, in seconds."""
MAX_ASSERTION_LENGTH: Final = 4096
ALLOWED_HEADERS: Final = frozenset({"alg", "typ", "kid"})
KEY_HEADERS: Final = frozenset({"jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256", "crit"})
KEY_REFRESH_INTERVAL_S: Final = 30.0
SERVICE_KEYS_STATE: Final = "service_identity_keys"
AUDIT_RESOURCE: Final = "ServiceToken"
AMR: Final = ("jwt-bearer",)

_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_VERSION = re.compile(r"^[1-9][0-9]{0,8}$")


# --- problems: RFC 9457 bodies that carry the RFC 6749 section 5.2 `error` code ---------


class OAuthProblem(ProblemError):
    """A refused token request; the problem body carries the OAuth `error` code and
    `error_description` too (as the token endpoint's other grant does), so OAuth clients
    and people read the same answer."""

    status, title, slug = 400, "Invalid token request", "invalid-token-request"
    error: ClassVar[str] = "invalid_request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, error=self.error, error_description=detail, **extra)


class InvalidRequest(OAuthProblem):
    pass


class InvalidGrant(OAuthProblem):
    title, slug, error = "Invalid grant", "invalid-grant", "invalid_grant"


class UnauthorizedClient(OAuthProblem):
    title, slug, error = "Unauthorized client", "unauthorized-client", "unauthorized_client"


class InvalidScope(OAuthProblem):
    title, slug, error = "Invalid scope", "invalid-scope", "invalid_scope"


class UnsupportedGrant(OAuthProblem):
    title, slug = "Unsupported grant type", "unsupported-grant-type"
    error = "unsupported_grant_type"


# --- the service identities' public keys ----------------------------------------------


class ServiceKeys:
    """Public keys of every service identity, read from their transit keys and cached
    like a JWKS; an unknown `kid` (a key rotated since) triggers a re-read, at most every
    `KEY_REFRESH_INTERVAL_S` per service so junk kids cannot hammer Vault."""

    def __init__(self, vault: Vault, *, ttl_s: float, clock: Clock) -> None:
        self._vault = vault
        self._ttl_s = ttl_s
        self._clock = clock
        self._sources: dict[str, TransitJwksSource] = {}
        self._refreshed_at: dict[str, float] = {}

    async def key(self, service: str, kid: str) -> Ed25519PublicKey | None:
        """The public key `kid` of `service`'s identity key, or None."""
        source = self._sources.get(service)
        if source is None:
            source = TransitJwksSource(
                self._vault, service_key_name(service), ttl_s=self._ttl_s, clock=self._clock
            )
            self._sources[service] = source
        try:
            keys = await source.keys()
            if kid not in keys and self._may_refresh(service):
                keys = await source.refresh()
        except JwksError as exc:
            raise DependencyUnavailable(
                f"The public keys of service {service!r} cannot be read from Vault; retry."
            ) from exc
        key = keys.get(kid)
        return key if isinstance(key, Ed25519PublicKey) else None

    def _may_refresh(self, service: str) -> bool:
        now = self._clock.now().timestamp()
        last = self._refreshed_at.get(service)
        if last is not None and now - last < KEY_REFRESH_INTERVAL_S:
            return False
        self._refreshed_at[service] = now
        return True


def _service_keys(runtime: Runtime) -> ServiceKeys:
    keys = runtime.state.get(SERVICE_KEYS_STATE)
    if isinstance(keys, ServiceKeys):
        return keys
    settings = settings_of(runtime)
    # Built on first use with identity's own Vault token, whose policy may read (never
    # sign with) every `careloop-service-*` key.
    built = ServiceKeys(
        runtime.vault,
        ttl_s=settings.auth_jwks_ttl_s,
        clock=runtime.clock,
    )
    runtime.state[SERVICE_KEYS_STATE] = built
    return built


# --- parsing and checking the assertion (no I/O) --------------------------------------


@dataclass(frozen=True)
class Assertion:
    """A parsed, not yet verified, assertion."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    signing_input: bytes
    signature: bytes


def _json_object(segment: str) -> dict[str, Any]:
    try:
        return json_segment(segment)
    except ValueError:
        raise InvalidGrant("The assertion is not a well-formed JWT.") from None


def parse_assertion(assertion: str) -> Assertion:
    """The parts of a compact JWS assertion with an acceptable header, or InvalidGrant."""
    if not isinstance(assertion, str) or not assertion or len(assertion) > MAX_ASSERTION_LENGTH:
        raise InvalidGrant("The assertion is missing or too long.")
    parts = assertion.split(".")
    if len(parts) != 3 or not all(parts):
        raise InvalidGrant("The assertion is not a compact JWS (header.claims.signature).")
    header_b64, claims_b64, signature_b64 = parts
    header = _json_object(header_b64)
    if KEY_HEADERS & header.keys():
        raise InvalidGrant("The assertion header may not carry or point at keys, nor `crit`.")
    if header.keys() != ALLOWED_HEADERS:
        raise InvalidGrant("The assertion header must be exactly `alg`, `typ` and `kid`.")
    if header["alg"] != ASSERTION_ALGORITHM:
        raise InvalidGrant(f"The assertion must be signed with {ASSERTION_ALGORITHM}.")
    if header["typ"] != ASSERTION_TYPE:
        raise InvalidGrant(f"The assertion's `typ` must be {ASSERTION_TYPE}.")
    if not isinstance(header["kid"], str) or not header["kid"] or len(header["kid"]) > 200:
        raise InvalidGrant("The assertion names no valid key (`kid`).")
    try:
        signature = b64url_decode(signature_b64)
    except ValueError:
        raise InvalidGrant("The assertion's signature is not base64url.") from None
    return Assertion(
        header=header,
        claims=_json_object(claims_b64),
        signing_input=f"{header_b64}.{claims_b64}".encode("ascii"),
        signature=signature,
    )


def claimed_service(claims: Mapping[str, Any]) -> str:
    """The service an assertion speaks for: from `iss`, which must equal `sub`."""
    iss, sub = claims.get("iss"), claims.get("sub")
    if not isinstance(iss, str) or iss != sub:
        raise InvalidGrant("The assertion's `iss` and `sub` must both be `service:<name>`.")
    name = service_of(iss)
    if name is None or not _SERVICE_NAME.match(name):
        raise InvalidGrant("The assertion's `iss` and `sub` must both be `service:<name>`.")
    return name


def key_version(kid: str, service: str) -> int:
    """The version a `kid` names of `service`'s own key; InvalidGrant for any other key."""
    key_name, _, version = kid.rpartition(":")
    if key_name != service_key_name(service) or not _VERSION.match(version):
        raise InvalidGrant(f"The assertion's `kid` must name a version of service {service}'s key.")
    return int(version)


def _int_claim(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidGrant(f"The assertion's `{name}` claim is missing or not a number.")
    return value


def check_claims(claims: Mapping[str, Any], *, audience: str, now: float) -> tuple[str, int]:
    """(`jti`, `exp`) of claims that are timely and meant for `audience`; InvalidGrant
    otherwise."""
    aud = claims.get("aud")
    if aud != audience:
        # One string only: an audience list is where audience-injection attacks live.
        raise InvalidGrant(f"The assertion's `aud` must be {audience!r} (identity's issuer).")
    exp, iat = _int_claim(claims, "exp"), _int_claim(claims, "iat")
    if not iat < exp:
        raise InvalidGrant("The assertion expires before it is issued.")
    if exp - iat > MAX_ASSERTION_LIFETIME_S:
        raise InvalidGrant(f"The assertion may live at most {MAX_ASSERTION_LIFETIME_S} seconds.")
    if now >= exp + ASSERTION_LEEWAY_S:
        raise InvalidGrant("The assertion has expired; sign a new one.")
    if iat > now + ASSERTION_LEEWAY_S:
        raise InvalidGrant("The assertion is issued in the future; check the clock.")
    if "nbf" in claims and _int_claim(claims, "nbf") > now + ASSERTION_LEEWAY_S:
        raise InvalidGrant("The assertion is not valid yet.")
    jti = claims.get("jti")
    if not isinstance(jti, str) or len(jti) > MAX_JTI_LENGTH or not _SAFE_ID.match(jti):
        raise InvalidGrant("The assertion needs a unique `jti` (letters, digits, '.:_-').")
    return jti, exp


def granted_scope(service: str, requested: str | None) -> str:
    """The permissions a token of `service` carries, space-separated.

    A requested scope must be a subset of the grants. The token still carries every
    grant (services are authorized from `SERVICE_GRANTS` by name, not from the token),
    so the answer says what the token can do, not what was asked."""
    grants = frozenset(SERVICE_GRANTS[service])
    if requested is not None and not frozenset(requested.split()) <= grants:
        raise InvalidScope(f"Service {service} may ask only for: {' '.join(sorted(grants))}.")
    return " ".join(sorted(grants))


def _valid_org(value: str | None) -> str | None:
    return value if value is not None and _SAFE_ID.match(value) else None


# --- the exchange ---------------------------------------------------------------------


async def _verify(runtime: Runtime, assertion: Assertion, service: str) -> None:
    kid = cast(str, assertion.header["kid"])
    key_version(kid, service)
    key = await _service_keys(runtime).key(service, kid)
    if key is None:
        raise InvalidGrant(f"The assertion's `kid` names no current key of service {service}.")
    if len(assertion.signature) != 64:
        raise InvalidGrant("The assertion's signature is invalid.")
    try:
        key.verify(assertion.signature, assertion.signing_input)
    except InvalidSignature:
        raise InvalidGrant("The assertion's signature is invalid.") from None


async def _issue(
    step: StepContext,
    entry: AuditEntry,
    *,
    service: str,
    org: str,
    jti: str,
    exp: int,
    scope: str,
) -> dict[str, Any]:
    runtime = step.runtime
    signer = signer_of(runtime)
    grant = AccessGrant(
        user_id=service_subject(service),
        org_id=org,
        # Not a login session: nothing to refresh or log out of. Its own id still lets
        # the revocation feed cut one token family off.
        session_id=f"service-{uuid4().hex}",
        actor_type="service",
        roles=(),
        locations=(ALL_LOCATIONS,),
        patient_id=None,
        amr=AMR,
        # What the token permits, for whoever reads it; services are still authorized
        # from SERVICE_GRANTS by name, so this claim can never widen them.
        scope=scope,
    )
    if await IdentityRepository(step.session).get_organization(org) is None:
        raise InvalidRequest("`org` names no organization.")
    assertions = ServiceAssertionRepository(step.session)
    now = runtime.clock.now()
    await assertions.purge_expired(now)
    expires_at = datetime.fromtimestamp(exp + ASSERTION_LEEWAY_S, tz=UTC)
    if not await assertions.consume(jti, service, expires_at):
        raise InvalidGrant("This assertion was already used; sign a new one for each request.")
    token = await signer.issue(grant)
    entry.resource_id = grant.session_id
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": int(signer.ttl.total_seconds()),
        "scope": scope,
    }


def _presenter(assertion: str, org: str | None) -> Principal:
    """Who the exchange is audited as: the service the assertion claims to speak for and
    the organization asked for, as far as they read before anything is checked (never
    trusted; `unknown` where they do not)."""
    try:
        service: str | None = claimed_service(parse_assertion(assertion).claims)
    except OAuthProblem:
        service = None
    return Principal(
        actor_id=service_subject(service) if service else UNKNOWN_ACTOR,
        actor_type="service",
        org_id=org or UNKNOWN_ACTOR,
    )


async def exchange_service_assertion(
    runtime: Runtime,
    *,
    assertion: str,
    scope: str | None,
    org: str | None,
    meta: RequestMeta,
) -> dict[str, Any]:
    """The token response body (`access_token`, `token_type`, `expires_in`, `scope`) for
    a valid service assertion; a ProblemError (400 `invalid_grant`) otherwise.

    `org` is the form field naming the organization the token acts for (None: not
    sent, or sent more than once)."""
    org = _valid_org(org)
    entry = identity_entry("create", AUDIT_RESOURCE)
    async with (
        own_transaction(runtime, **meta) as step,
        step.audited(_presenter(assertion, org), entry),
    ):
        try:
            parsed = parse_assertion(assertion)
            service = claimed_service(parsed.claims)
            if service not in SERVICE_GRANTS:
                raise UnauthorizedClient(f"Service {service} holds no grants in SERVICE_GRANTS.")
            await _verify(runtime, parsed, service)
            jti, exp = check_claims(
                parsed.claims,
                audience=settings_of(runtime).token_issuer,
                now=runtime.clock.now().timestamp(),
            )
            if org is None:
                raise InvalidRequest("Send `org`, once: the organization the service acts for.")
            scope_granted = granted_scope(service, scope)
            return await _issue(
                step, entry, service=service, org=org, jti=jti, exp=exp, scope=scope_granted
            )
        except OAuthProblem as refusal:
            # The trail keeps the OAuth error and its description, not the status alone.
            entry.refuse(f"{refusal.status} {refusal.error}: {refusal.detail}"[:AUDIT_DETAIL])
            raise
