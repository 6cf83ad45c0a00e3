"""Access-token verification: every service checks every token itself.

An access token is a compact JWS signed by identity with Ed25519 (an OpenBao
transit key). The checks follow RFC 8725: the algorithm allow-list is fixed here
(`EdDSA` only) and never taken from the token; the token type must be `at+jwt`;
headers that carry or point at key material (`jwk`, `jku`, `x5u`, `x5c`) and
`crit` are refused; the key comes only from the JWKS by `kid`; issuer, audience,
expiry and not-before are checked against an injected clock; a revoked session's
tokens are refused. The optional `bg` claim (break-glass grants) is checked strictly:
a list of `{"pat", "exp", "gid"}` objects, only in staff user tokens. Partner
and service tokens hold no roles; a partner token may carry its rate limit (`rl`,
requests per minute) for the gateway. Every failure
is `InvalidToken` (401) with a safe message that never echoes the token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast, get_args

from cryptography.exceptions import InvalidSignature

from careloop_contracts.platform import IDENTITY_SIGNING_KEY, TOKEN_ISSUER
from careloop_kit.auth.jwks import JwksError, JwksSource, b64url_decode
from careloop_kit.auth.principal import BreakGlassGrant
from careloop_kit.auth.revocation import DEFAULT_MAX_TOKEN_LIFETIME_S, RevokedSessions
from careloop_kit.clock import Clock, SystemClock
from careloop_kit.errors import Unauthorized

ALLOWED_ALGORITHMS: Final = frozenset({"EdDSA"})
ACCESS_TOKEN_TYPE: Final = "at+jwt"  # noqa: S105 - a token type, not a secret
DEFAULT_ISSUER: Final = TOKEN_ISSUER
DEFAULT_AUDIENCE: Final = "careloop"
SIGNING_KEY_NAME: Final = IDENTITY_SIGNING_KEY
FORBIDDEN_HEADERS: Final = frozenset({"jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "crit"})
ALLOWED_HEADERS: Final = frozenset({"alg", "typ", "kid"})
MAX_TOKEN_LENGTH: Final = 8192
KID_REFRESH_INTERVAL_S: Final = 30.0
MAX_BREAK_GLASS_GRANTS: Final = 16
BREAK_GLASS_KEYS: Final = frozenset({"pat", "exp", "gid"})

TokenActor = Literal["user", "patient", "partner", "service"]
_ACTORS: Final = frozenset(get_args(TokenActor))


class InvalidToken(Unauthorized):
    """The bearer token is missing, malformed, forged, expired or revoked."""

    title = "Invalid access token"


@dataclass(frozen=True)
class Claims:
    """The verified claims of an access token."""

    iss: str
    aud: str
    sub: str
    exp: int
    iat: int
    nbf: int
    jti: str
    sid: str
    org: str
    act: TokenActor
    roles: tuple[str, ...]
    loc: tuple[str, ...] = ()
    pat: str | None = None
    amr: tuple[str, ...] = ()
    scope: str | None = None
    break_glass: tuple[BreakGlassGrant, ...] = ()
    rate_limit: int | None = None
    """Requests per minute granted to this client (`rl`, partner tokens only)."""

    @property
    def scopes(self) -> frozenset[str]:
        """The partner scopes, split."""
        return frozenset((self.scope or "").split())


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate member")
        result[key] = value
    return result


def json_segment(segment: str) -> dict[str, Any]:
    """The JSON object of a base64url JWS segment, strictly: duplicate members (which
    parsers resolve differently) and anything but an object are `ValueError`."""
    try:
        value = json.loads(b64url_decode(segment), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as exc:
        raise ValueError("segment is not UTF-8") from exc
    if not isinstance(value, dict):
        raise ValueError("segment is not a JSON object")
    return value


def _json_object(segment: str) -> dict[str, Any]:
    try:
        return json_segment(segment)
    except ValueError:
        raise InvalidToken("The access token is malformed.") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _str(payload: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = payload.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > 256:
        raise InvalidToken(f"The access token's '{name}' claim is missing or invalid.")
    return value


def _str_list(payload: dict[str, Any], name: str, *, required: bool) -> tuple[str, ...]:
    value = payload.get(name)
    if value is None and not required:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidToken(f"The access token's '{name}' claim is missing or invalid.")
    return tuple(value)


def _int(payload: dict[str, Any], name: str) -> int:
    value = payload.get(name)
    if not _is_int(value):
        raise InvalidToken(f"The access token's '{name}' claim is missing or invalid.")
    return cast(int, value)


def _break_glass(payload: dict[str, Any], act: str | None) -> tuple[BreakGlassGrant, ...]:
    value = payload.get("bg")
    if value is None:
        return ()
    invalid = InvalidToken("The access token's 'bg' claim is invalid.")
    if act != "user" or not isinstance(value, list) or len(value) > MAX_BREAK_GLASS_GRANTS:
        raise invalid
    grants = []
    for entry in value:
        if not isinstance(entry, dict) or entry.keys() != BREAK_GLASS_KEYS:
            raise invalid
        pat, exp, gid = entry["pat"], entry["exp"], entry["gid"]
        if not _is_int(exp) or exp <= 0:
            raise invalid
        for text in (pat, gid):
            if not isinstance(text, str) or not text or len(text) > 256:
                raise invalid
        grants.append(BreakGlassGrant(patient_id=pat, expires_at=exp, grant_id=gid))
    return tuple(grants)


class TokenVerifier:
    """Verifies access tokens against identity's JWKS."""

    def __init__(
        self,
        jwks: JwksSource,
        *,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        leeway_s: float = 30,
        clock: Clock | None = None,
        revoked: RevokedSessions | None = None,
        max_lifetime_s: float = DEFAULT_MAX_TOKEN_LIFETIME_S,
        kid_refresh_interval_s: float = KID_REFRESH_INTERVAL_S,
    ) -> None:
        self.jwks = jwks
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.clock = clock or SystemClock()
        self.revoked = revoked if revoked is not None else RevokedSessions(clock=self.clock)
        self.max_lifetime_s = max_lifetime_s
        self.kid_refresh_interval_s = kid_refresh_interval_s
        self._last_kid_refresh: float | None = None

    def is_revoked(self, session_id: str) -> bool:
        """Whether the session's tokens are refused."""
        return self.revoked.is_revoked(session_id)

    async def verify(self, token: str) -> Claims:
        """The claims of a valid access token, or `InvalidToken`."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("The access token is malformed.")
        parts = token.split(".")
        if len(parts) != 3 or not all(parts):
            raise InvalidToken("The access token is malformed.")
        header_b64, payload_b64, signature_b64 = parts
        header = _json_object(header_b64)
        kid = self._check_header(header)
        key = await self._key(kid)
        try:
            signature = b64url_decode(signature_b64)
        except ValueError:
            raise InvalidToken("The access token is malformed.") from None
        if len(signature) != 64:
            raise InvalidToken("The access token's signature is invalid.")
        try:
            key.verify(signature, f"{header_b64}.{payload_b64}".encode("ascii"))
        except InvalidSignature:
            raise InvalidToken("The access token's signature is invalid.") from None
        claims = self._claims(_json_object(payload_b64))
        if self.revoked.is_revoked(claims.sid):
            raise InvalidToken("The session of this access token has ended; sign in again.")
        return claims

    def _check_header(self, header: dict[str, Any]) -> str:
        if FORBIDDEN_HEADERS & header.keys():
            raise InvalidToken("The access token carries a forbidden header.")
        if not header.keys() <= ALLOWED_HEADERS:
            raise InvalidToken("The access token carries an unexpected header.")
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            raise InvalidToken("The access token's algorithm is not allowed.")
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise InvalidToken("This is not an access token.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 200:
            raise InvalidToken("The access token names no valid signing key.")
        return kid

    async def _key(self, kid: str) -> Any:
        try:
            keys = await self.jwks.keys()
            if kid not in keys and self._may_refresh():
                keys = await self.jwks.refresh()
        except JwksError:
            raise InvalidToken("The signing keys are unavailable; retry shortly.") from None
        key = keys.get(kid)
        if key is None:
            raise InvalidToken("The access token's signing key is unknown.")
        return key

    def _may_refresh(self) -> bool:
        now = self.clock.now().timestamp()
        last = self._last_kid_refresh
        if last is not None and now - last < self.kid_refresh_interval_s:
            return False
        self._last_kid_refresh = now
        return True

    def _claims(self, payload: dict[str, Any]) -> Claims:
        iss = _str(payload, "iss")
        if iss != self.issuer:
            raise InvalidToken("The access token's issuer is not accepted.")
        aud = payload.get("aud")
        audiences: Sequence[Any] = aud if isinstance(aud, list) else [aud]
        if self.audience not in audiences or not all(isinstance(a, str) for a in audiences):
            raise InvalidToken("The access token is not meant for this audience.")
        exp, iat, nbf = _int(payload, "exp"), _int(payload, "iat"), _int(payload, "nbf")
        now = self.clock.now().timestamp()
        if now >= exp + self.leeway_s:
            raise InvalidToken("The access token has expired.")
        if now + self.leeway_s < nbf or now + self.leeway_s < iat:
            raise InvalidToken("The access token is not valid yet.")
        if exp - iat > self.max_lifetime_s:
            raise InvalidToken("The access token's lifetime is too long.")
        act = _str(payload, "act")
        if act not in _ACTORS:
            raise InvalidToken("The access token's 'act' claim is missing or invalid.")
        roles = _str_list(payload, "roles", required=True)
        pat = _str(payload, "pat", required=False)
        if (act == "patient" or "patient" in roles) and pat is None:
            raise InvalidToken("The access token's 'pat' claim is missing or invalid.")
        if act == "patient" and set(roles) - {"patient"}:
            raise InvalidToken("A patient access token may hold only the patient role.")
        scope = payload.get("scope")
        if scope is not None and not isinstance(scope, str):
            raise InvalidToken("The access token's 'scope' claim is missing or invalid.")
        if "patient" in roles and "bg" in payload:
            raise InvalidToken("The access token's 'bg' claim is invalid.")
        break_glass = _break_glass(payload, act)
        rate_limit = payload.get("rl")
        if rate_limit is not None and (
            act != "partner" or not _is_int(rate_limit) or not 0 < rate_limit <= 1_000_000
        ):
            raise InvalidToken("The access token's 'rl' claim is invalid.")
        if act in ("partner", "service") and roles:
            raise InvalidToken("A client access token holds scopes, not roles.")
        return Claims(
            iss=iss,
            aud=self.audience,
            sub=cast(str, _str(payload, "sub")),
            exp=exp,
            iat=iat,
            nbf=nbf,
            jti=cast(str, _str(payload, "jti")),
            sid=cast(str, _str(payload, "sid")),
            org=cast(str, _str(payload, "org")),
            act=cast(TokenActor, act),
            roles=roles,
            loc=_str_list(payload, "loc", required=False),
            pat=pat,
            amr=_str_list(payload, "amr", required=False),
            scope=scope,
            break_glass=break_glass,
            rate_limit=rate_limit,
        )
