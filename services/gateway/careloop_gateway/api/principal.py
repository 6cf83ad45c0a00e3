"""Who a request counts against, for rate limits and idempotency keys."""

from __future__ import annotations

import hashlib

from fastapi import Request


def principal_key(request: Request) -> str:
    """A stable, non-secret key of the caller.

    Once the token is verified (idempotency keys), the token's tenant and subject, so a
    refreshed token keeps its keys. Before that (rate limits, checked first so a flood
    of bad tokens is cheap to refuse): the SHA-256 of the bearer token (the token itself
    is never stored), else the client address.
    """
    claims = getattr(request.state, "claims", None)
    if claims is not None:
        return f"sub:{claims.org}:{claims.sub}"
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "token:" + hashlib.sha256(token.strip().encode()).hexdigest()
    host = request.client.host if request.client else "unknown"
    return f"ip:{host}"
