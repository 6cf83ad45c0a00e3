"""What every router shares: the request context (caller, transaction and repositories
in one) by the permission a route needs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from careloop_caregaps.store.repository import Repositories, repositories
from careloop_kit.auth import require
from careloop_kit.context import RequestContext, request_context

READ, UPDATE, MANAGE = "caregaps:read", "caregaps:update", "caregaps:manage"

Context = RequestContext[Repositories]
# mfa=True: a role that sees clinical data must have signed in with a second factor.
ReadContext = Annotated[Context, Depends(request_context(require(READ, mfa=True), repositories))]
UpdateContext = Annotated[
    Context, Depends(request_context(require(UPDATE, mfa=True), repositories))
]
ManageContext = Annotated[
    Context, Depends(request_context(require(MANAGE, mfa=True), repositories))
]
