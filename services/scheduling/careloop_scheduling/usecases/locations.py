"""Scheduling's view of locations and the rules it carries.

Identity owns locations: `LocationCreated` / `LocationChanged` (the whole state of a
location) are applied to scheduling's view by `apply_location`, in the transaction of
the consumer's inbox mark, so a redelivered event is a no-op and an event older than
the one applied last changes nothing. Scheduling's own per-location settings
(reminder settings, providers' windows) stay scheduling's.

The view answers two questions for every workflow: does a feature switch let it run
at this location (`feature_on`; a switch never set is on, and so is every switch of a
location scheduling has not heard of), and may this caller see what happens at a
sensitive location (`check_visible`, `hidden_locations`): only staff whose scope names
that location do, whatever their other scopes.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.identity import LocationChanged, LocationCreated, LocationFeature
from careloop_kit.auth import AuthenticatedPrincipal
from careloop_kit.locations import logged_if_stale
from careloop_kit.problems import Forbidden
from careloop_kit.service import Runtime
from careloop_scheduling.domain.locations import LocationInfo, sees_sensitive
from careloop_scheduling.store.repository import Repositories, repositories

log = logging.getLogger(__name__)

SENSITIVE_REFUSAL = (
    "This record is at a sensitive location: only staff scoped to that location see it."
)


async def apply_location(
    runtime: Runtime, session: AsyncSession, event: LocationCreated | LocationChanged
) -> bool:
    """Take identity's state of a location into the view; False when the view already
    holds a later state (the event is then only marked as seen)."""
    item = LocationInfo(
        id=event.location_id,
        time_zone=event.time_zone,
        display_name=event.name,
        sensitive=event.sensitive,
        features=dict(event.features),
    )
    applied = await repositories(session).locations.apply(
        event.org_id, item, changed_at=event.occurred_at, now=runtime.clock.now()
    )
    return logged_if_stale(log, event, applied)


async def feature_on(
    repos: Repositories, org_id: str, location_id: str, feature: LocationFeature
) -> bool:
    """Whether the workflow `feature` runs at the location (unknown location: on)."""
    where = await repos.locations.get(org_id, location_id)
    return where is None or where.runs(feature)


def _sees(principal: AuthenticatedPrincipal, location_id: str) -> bool:
    return sees_sensitive(
        is_patient=principal.is_patient, locations=principal.locations, location_id=location_id
    )


async def check_visible(
    repos: Repositories, principal: AuthenticatedPrincipal, location_id: str
) -> None:
    """`Forbidden` when the location is sensitive and the caller's scope does not name
    it (an org-wide scope does not); a patient reaches its own records anywhere."""
    if principal.is_patient:
        return
    if location_id in await repos.locations.sensitive_ids(principal.org_id) and not _sees(
        principal, location_id
    ):
        raise Forbidden(SENSITIVE_REFUSAL)


async def check_reach(
    repos: Repositories, principal: AuthenticatedPrincipal, patient_id: str, location_id: str
) -> None:
    """A patient reaches only its own records (any location); staff only their
    locations, and a sensitive location only when their scope names it."""
    principal.can_access_patient(patient_id, location_id)
    await check_visible(repos, principal, location_id)


async def hidden_locations(
    repos: Repositories, principal: AuthenticatedPrincipal
) -> frozenset[str]:
    """The sensitive locations whose records lists must leave out for this caller."""
    if principal.is_patient:
        return frozenset()
    sensitive = await repos.locations.sensitive_ids(principal.org_id)
    return frozenset(loc for loc in sensitive if not _sees(principal, loc))
