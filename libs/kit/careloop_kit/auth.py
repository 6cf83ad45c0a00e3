"""Who is calling: the principal of a request.

THE SEAM: `resolve_principal` is the single place where token-based
authorization plugs in once the identity service issues JWTs. Until then a
request names its organization in `X-Organization-Id` and its actor in
`X-Actor-Id`; both are validated, and nothing else in a service reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Header

from careloop_kit.problems import Unauthorized

ActorType = Literal["user", "service", "partner", "patient", "system"]
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller and the tenant it acts in."""

    actor_id: str
    actor_type: ActorType
    org_id: str
    purpose_of_use: str = "TREAT"


async def resolve_principal(
    x_organization_id: Annotated[str | None, Header()] = None,
    x_actor_id: Annotated[str | None, Header()] = None,
) -> Principal:
    """Resolve the caller; replace with JWT verification when identity lands."""
    if not x_organization_id or not _ID.match(x_organization_id):
        raise Unauthorized(
            "Send the organization id in the X-Organization-Id header "
            "(letters, digits, '.', '_', ':' or '-', at most 64)."
        )
    actor = x_actor_id or "anonymous"
    if not _ID.match(actor):
        raise Unauthorized("X-Actor-Id must be an id of at most 64 safe characters.")
    return Principal(actor_id=actor, actor_type="user", org_id=x_organization_id)


PrincipalDep = Annotated[Principal, Depends(resolve_principal)]
