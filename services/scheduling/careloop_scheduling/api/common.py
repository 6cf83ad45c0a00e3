"""What both routers share: permission dependencies, problems, lookups."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from careloop_kit.auth import AuthenticatedPrincipal, require
from careloop_kit.problems import NotFound, ProblemError
from careloop_kit.service import Runtime, SessionDep
from careloop_scheduling.domain.catalog import AppointmentType, Provider
from careloop_scheduling.settings import SchedulingSettings
from careloop_scheduling.store.repository import SchedulingRepository

SETTINGS_KEY = "scheduling_settings"

READ, BOOK, MANAGE = "scheduling:read", "scheduling:book", "scheduling:manage"

# mfa=True: a role that sees clinical data elsewhere (provider, care coordinator,
# org admin) must have signed in with a second factor here too.
Reader = Annotated[AuthenticatedPrincipal, Depends(require(READ, mfa=True))]
Booker = Annotated[AuthenticatedPrincipal, Depends(require(BOOK, mfa=True))]
Manager = Annotated[AuthenticatedPrincipal, Depends(require(MANAGE, mfa=True))]


class InvalidScheduling(ProblemError):
    status, title, slug = 422, "Invalid scheduling request", "invalid-scheduling"


def settings_of(runtime: Runtime) -> SchedulingSettings:
    """The service's own settings (the runtime holds them typed as the kit's base)."""
    settings: SchedulingSettings = runtime.state[SETTINGS_KEY]
    return settings


def repository(session: SessionDep) -> SchedulingRepository:
    return SchedulingRepository(session)


RepoDep = Annotated[SchedulingRepository, Depends(repository)]


async def load_provider(repo: SchedulingRepository, org_id: str, provider_id: str) -> Provider:
    found = await repo.get_provider(org_id, provider_id)
    if found is None:
        # Another tenant's provider is indistinguishable from a missing one.
        raise NotFound(f"No provider {provider_id} in this organization.")
    return found


async def load_type(repo: SchedulingRepository, org_id: str, type_id: str) -> AppointmentType:
    found = await repo.get_type(org_id, type_id)
    if found is None:
        raise NotFound(f"No appointment type {type_id} in this organization.")
    return found
