"""Token check at the edge: the gateway refuses bad tokens before any service sees them.

Services verify every token themselves as well (the gateway is not the only wall);
this check keeps forged, expired and revoked tokens off the internal network and
names the caller for rate limits. It runs inside the admission of `api/limits.py`,
after the client address' bad-token budget is checked and before the principal's
own budget is spent.
"""

from __future__ import annotations

import re

from fastapi import Request

from careloop_kit.auth.dependencies import bearer_token, token_verifier_of
from careloop_kit.auth.tokens import Claims, InvalidToken

# Exact paths a caller reaches without an access token, by service: signing in, the
# OAuth token endpoint (partners and services authenticate with their own credential),
# the signing keys, creating or listing tenants (the operator's bootstrap token), and
# the SMS provider's signed callbacks.
# Everything below /organizations/{org} takes an access token.
PUBLIC_ROUTES: dict[str, frozenset[str]] = {
    "identity": frozenset(
        {
            "/auth/login",
            "/auth/refresh",
            "/auth/logout",
            "/oauth/token",
            "/.well-known/jwks.json",
            "/organizations",
        }
    ),
    # Twilio's callbacks carry no access token: messaging checks each one's
    # X-Twilio-Signature over the public URL (CARELOOP_TWILIO_*_URL) and refuses the rest.
    "messaging": frozenset({"/webhooks/twilio/status", "/webhooks/twilio/inbound"}),
}


# Public by prefix: exactly one path segment below the prefix, of these characters only
# (no `/`, `.` or `%`), so no dot segment or encoded slash can reach another route. The
# secure links in patients' messages: the token in the path is the credential (checked
# by messaging, which answers the same 404 to every bad one).
PUBLIC_PREFIXES: dict[str, tuple[re.Pattern[str], ...]] = {
    "messaging": (re.compile(r"/links/[A-Za-z0-9_-]{1,400}"),),
}


def is_public(service: str, upstream_path: str) -> bool:
    """True when `upstream_path` of `service` may be called without a token."""
    if upstream_path.rstrip("/") in PUBLIC_ROUTES.get(service, frozenset()):
        return True
    return any(p.fullmatch(upstream_path) for p in PUBLIC_PREFIXES.get(service, ()))


def missing_token() -> InvalidToken:
    """The 401 for a route that needs a token, called without one."""
    return InvalidToken(
        "Send an access token: Authorization: Bearer <token> "
        "(sign in with POST /api/v1/identity/auth/login)."
    )


async def verify_token(request: Request) -> Claims:
    """Verify the request's bearer token, or `InvalidToken`; keep its claims.

    A token that is present is always verified, even on a public route. The claims are
    kept on `request.state.claims`, which names the principal for rate limits and
    idempotency keys.
    """
    claims = await token_verifier_of(request.app).verify(bearer_token(request))
    request.state.claims = claims
    return claims
