"""Token verification seam of the gateway."""

from __future__ import annotations

from fastapi import Request


async def authenticate(request: Request) -> None:
    """Verify the caller's token before a request is proxied; raise to refuse it.

    Called for every proxied request. It does nothing yet: the kit's `TokenVerifier`
    (signature against the cached JWKS, algorithm allow-list, issuer, audience, expiry,
    token type) plugs in here and raises `Unauthorized` (401 problem) on a bad token.
    Services verify tokens themselves as well; the gateway is not the only wall.
    """
    return None
