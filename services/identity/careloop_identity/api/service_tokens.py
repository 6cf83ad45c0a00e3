"""Service identities: a Careloop service proves who it is with a JWT assertion
signed by its own Vault transit key (RFC 7523 JWT-bearer grant), never a shared
secret, and gets a short access token (`act: service`, `sub: service:<name>`).

The token endpoint (`careloop_identity.api.oauth`) hands grant type
`urn:ietf:params:oauth:grant-type:jwt-bearer` to `exchange_service_assertion`.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from careloop_kit.problems import ProblemError
from careloop_kit.service import Runtime

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class UnsupportedGrant(ProblemError):
    status, title, slug = 400, "Unsupported grant type", "unsupported-grant-type"


async def exchange_service_assertion(
    request: Request, runtime: Runtime, *, assertion: str, scope: str | None
) -> dict[str, Any]:
    """The token response body (`access_token`, `token_type`, `expires_in`, `scope`) for
    a valid service assertion; a ProblemError (400 `invalid_grant`) otherwise."""
    raise UnsupportedGrant("Service identities are not enabled yet.")
