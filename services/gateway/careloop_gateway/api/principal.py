"""Who a request counts against, for rate limits and idempotency keys."""

from __future__ import annotations

import hashlib

from fastapi import Request


def principal_key(request: Request) -> str:
    """A stable, non-secret key of the caller.

    For now: the SHA-256 of the bearer token when there is one (the token itself is
    never stored), else the organization and actor headers, else the client address.
    Once tokens are verified here this becomes the token's subject and client id.
    """
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "token:" + hashlib.sha256(token.strip().encode()).hexdigest()
    org = request.headers.get("x-organization-id")
    actor = request.headers.get("x-actor-id")
    if org or actor:
        material = f"{org or ''}\x00{actor or ''}".encode()
        return "actor:" + hashlib.sha256(material).hexdigest()
    host = request.client.host if request.client else "unknown"
    return f"ip:{host}"
