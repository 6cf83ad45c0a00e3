"""The request context, and the one way to load an aggregate in the caller's scope.

A route asks for one `RequestContext`: who calls (the principal holding the route's
permission), where the request came from (its id and the client address, as the audit
trail records them), the request's transaction and the service's repositories on it.
Use cases take it instead of four loose arguments, so every service audits, loads and
checks the same way. A step no principal calls (a sign-in, a token exchange) takes a
`StepContext` instead and audits the same way, naming its actor explicitly.

`RequestContext.opened` is the "load this aggregate for the caller, or answer 404/403,
audited" step every service repeats: the record is looked up (locked when the caller
asks), a missing one is a 404 (another tenant's row looks the same), its patient is named
in the trail before the access check runs, so a refused access is recorded against the
right patient.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency closure's
# `Depends(principal)` as an object, not a string it cannot resolve.

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar, cast

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.audit import AuditEntry, recorder_of, request_id_of
from careloop_kit.auth.dependencies import PERMISSION_ATTRIBUTE, required_permission
from careloop_kit.auth.principal import AuthenticatedPrincipal, Principal
from careloop_kit.errors import NotFound
from careloop_kit.service import Runtime, RuntimeDep, SessionDep

__all__ = [
    "Caller",
    "RequestContext",
    "RuntimeRepositories",
    "SessionRepositories",
    "StepContext",
    "load_in_scope",
    "own_transaction",
    "request_context",
    "request_id_of",
]

R = TypeVar("R")
T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    """Who asks, and where the request came from, as the audit trail records it."""

    principal: AuthenticatedPrincipal
    request_id: str | None = None
    source_ip: str | None = None

    @staticmethod
    def of(request: Request, principal: AuthenticatedPrincipal) -> "Caller":
        return Caller(
            principal=principal,
            request_id=request_id_of(request),
            source_ip=request.client.host if request.client else None,
        )

    @property
    def meta(self) -> dict[str, str | None]:
        """The request's origin as `AuditRecorder.scope` and `record` take it."""
        return {"request_id": self.request_id, "source_ip": self.source_ip}


async def load_in_scope(
    entry: AuditEntry,
    load: Awaitable[T | None],
    *,
    missing: str,
    patient_of: Callable[[T], str | None],
    check: Callable[[T], object],
) -> T:
    """The aggregate `load` finds, for the audited operation `entry`: `NotFound(missing)`
    when there is none, else its patient named in `entry`, then `check` (which raises
    `Forbidden` when the caller may not reach it; its result, awaited when it is a
    coroutine, is otherwise ignored)."""
    found = await load
    if found is None:
        raise NotFound(missing)
    entry.patient_id = patient_of(found)
    checked = check(found)
    if inspect.isawaitable(checked):
        await checked
    return found


@dataclass(frozen=True)
class RequestContext(Generic[R]):
    """One request: the service's runtime, the caller, its transaction and repositories."""

    runtime: Runtime
    session: AsyncSession
    caller: Caller
    repos: R

    @property
    def principal(self) -> AuthenticatedPrincipal:
        return self.caller.principal

    @property
    def request_id(self) -> str | None:
        return self.caller.request_id

    def audited(self, entry: AuditEntry) -> AbstractAsyncContextManager[AuditEntry]:
        """Audit the enclosed work: success in the request's transaction, a refusal or
        failure in a transaction of its own."""
        return recorder_of(self.runtime).scope(
            self.session, self.caller.principal, entry, **self.caller.meta
        )

    @asynccontextmanager
    async def opened(
        self,
        entry: AuditEntry,
        load: Awaitable[T | None],
        *,
        missing: str,
        patient_of: Callable[[T], str | None],
        check: Callable[[T], object],
    ) -> AsyncIterator[T]:
        """Inside one audited scope: the aggregate `load` finds, checked as
        `load_in_scope` does; the enclosed work runs in the same scope."""
        async with self.audited(entry):
            yield await load_in_scope(
                entry, load, missing=missing, patient_of=patient_of, check=check
            )


@dataclass(frozen=True)
class StepContext:
    """A step no principal calls (a sign-in, a token exchange, the operator's bootstrap):
    the service's runtime, the step's transaction and where its request came from.

    Each audited scope names its actor explicitly, as the trail records it: the account
    being signed in, the client or service that presents its credentials, or `unknown`
    when the step cannot tell who asks; the client's address is the request's."""

    runtime: Runtime
    session: AsyncSession
    request_id: str | None = None
    source_ip: str | None = None

    def audited(
        self, actor: Principal, entry: AuditEntry
    ) -> AbstractAsyncContextManager[AuditEntry]:
        """Audit the enclosed work as `actor`'s, as `RequestContext.audited` does: its
        outcome (success, or the refusal it returns with) in the step's transaction, a
        refusal or failure it raises in a transaction of its own."""
        return recorder_of(self.runtime).scope(
            self.session, actor, entry, request_id=self.request_id, source_ip=self.source_ip
        )


@asynccontextmanager
async def own_transaction(
    runtime: Runtime, *, request_id: str | None = None, source_ip: str | None = None
) -> AsyncIterator[StepContext]:
    """A `StepContext` in a transaction of its own, for steps whose refusals must stick
    (a failed sign-in's counter and its audit record): it commits when the step returns,
    a refusal it answers included, and rolls back when the step raises."""
    async with runtime.sessionmaker() as session, session.begin():
        yield StepContext(runtime, session, request_id=request_id, source_ip=source_ip)


SessionRepositories = Callable[[AsyncSession], R]
"""Repositories built on the request's session alone (most services: the classes)."""
RuntimeRepositories = Callable[[Runtime, AsyncSession], R]
"""Repositories that also need the service's runtime (a field cipher built at start-up)."""

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _on_runtime(
    repositories: SessionRepositories[R] | RuntimeRepositories[R],
) -> RuntimeRepositories[R]:
    """`repositories` as a builder of `(runtime, session)`, told apart by how many
    positional arguments it requires; anything else is refused when the route is
    declared, not on its first request."""
    required = [
        p
        for p in inspect.signature(repositories).parameters.values()
        if p.kind in _POSITIONAL and p.default is inspect.Parameter.empty
    ]
    if len(required) == 1:
        on_session = cast(SessionRepositories[R], repositories)
        return lambda runtime, session: on_session(session)
    if len(required) == 2:
        return cast(RuntimeRepositories[R], repositories)
    raise TypeError(f"{repositories!r}: a repository builder takes (session) or (runtime, session)")


def request_context(
    principal: Callable[..., Awaitable[AuthenticatedPrincipal]],
    repositories: SessionRepositories[R] | RuntimeRepositories[R],
) -> Callable[..., RequestContext[R]]:
    """A dependency: the `RequestContext` of a route whose caller `principal` (a
    `require(...)` dependency) admits, with `repositories` built on the request's
    session, or on the service's runtime and the session when it takes both. The
    dependency carries the permission of `principal`, so a route's own dependencies
    still name what it requires."""
    build = _on_runtime(repositories)

    def dependency(
        request: Request,
        caller: Annotated[AuthenticatedPrincipal, Depends(principal)],
        runtime: RuntimeDep,
        session: SessionDep,
    ) -> RequestContext[R]:
        return RequestContext(runtime, session, Caller.of(request, caller), build(runtime, session))

    permission = required_permission(principal)
    if permission is not None:
        setattr(dependency, PERMISSION_ATTRIBUTE, permission)
    return dependency
