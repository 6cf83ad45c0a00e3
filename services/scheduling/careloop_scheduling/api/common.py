"""What every router shares: permission dependencies, the repositories and the request
context (caller, transaction and repositories in one)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from careloop_kit.auth import AuthenticatedPrincipal, require
from careloop_kit.context import RequestContext, request_context
from careloop_kit.service import SessionDep
from careloop_scheduling.store.repository import Repositories, repositories
from careloop_scheduling.usecases.common import Work

READ, BOOK, MANAGE = "scheduling:read", "scheduling:book", "scheduling:manage"

# mfa=True: a role that sees clinical data elsewhere (provider, care coordinator,
# org admin) must have signed in with a second factor here too.
Reader = Annotated[AuthenticatedPrincipal, Depends(require(READ, mfa=True))]
Booker = Annotated[AuthenticatedPrincipal, Depends(require(BOOK, mfa=True))]
Manager = Annotated[AuthenticatedPrincipal, Depends(require(MANAGE, mfa=True))]


def _repositories(session: SessionDep) -> Repositories:
    return repositories(session)


# The request's repositories, on its session: the one way a route reaches the tables.
ReposDep = Annotated[Repositories, Depends(_repositories)]


Context = RequestContext[Repositories]
# The request context of a route, by the permission it needs.
ReadContext = Annotated[Context, Depends(request_context(require(READ, mfa=True), repositories))]
BookContext = Annotated[Context, Depends(request_context(require(BOOK, mfa=True), repositories))]
ManageContext = Annotated[
    Context, Depends(request_context(require(MANAGE, mfa=True), repositories))
]


def work_of(ctx: Context) -> Work:
    """The request's work on appointments: what it publishes carries the request id."""
    return Work(ctx.runtime, ctx.session, ctx.repos, ctx.request_id)
