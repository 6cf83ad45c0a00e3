"""What the routers share: the request context (caller, transaction and repositories in
one), also for repositories that need the runtime besides the session.

The kit's `request_context` builds repositories from the session alone; the portal inbox
opens what it stores with the runtime's field cipher, so its repository is built from both.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency closure's
# `Depends(base)` as an object, not a string it cannot resolve.

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.auth import PERMISSION_ATTRIBUTE, AuthenticatedPrincipal, required_permission
from careloop_kit.context import RequestContext, request_context
from careloop_kit.service import Runtime

R = TypeVar("R")


def _no_repositories(session: AsyncSession) -> None:
    return None


def runtime_request_context(
    principal: Callable[..., Awaitable[AuthenticatedPrincipal]],
    repositories: Callable[[Runtime, AsyncSession], R],
) -> Callable[..., RequestContext[R]]:
    """`request_context`, with `repositories` built on the request's runtime and session."""
    base = request_context(principal, _no_repositories)

    def dependency(
        context: Annotated[RequestContext[None], Depends(base)],
    ) -> RequestContext[R]:
        runtime, session = context.runtime, context.session
        return RequestContext(runtime, session, context.caller, repositories(runtime, session))

    permission = required_permission(base)
    if permission is not None:
        setattr(dependency, PERMISSION_ATTRIBUTE, permission)
    return dependency
