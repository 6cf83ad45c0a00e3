"""Who a request counts against, for rate limits and idempotency keys."""

from __future__ import annotations

from fastapi import Request


def address_key(request: Request) -> str:
    """The client address: the budget of traffic that has not proved who it is."""
    host = request.client.host if request.client else "unknown"
    return f"ip:{host}"


def principal_key(request: Request) -> str:
    """A stable, non-secret key of the caller.

    Once the token is verified (`request.state.claims`): the token's tenant and subject,
    so every token of one principal (a refreshed one, or a partner's many) shares one
    rate-limit bucket and keeps its idempotency keys. Without a verified token (public
    routes called anonymously): the client address.
    """
    claims = getattr(request.state, "claims", None)
    if claims is not None:
        return f"sub:{claims.org}:{claims.sub}"
    return address_key(request)
