"""Patients' view of locations, kept from identity's `LocationCreated` /
`LocationChanged` in the transaction of the consumer's inbox mark (a redelivered event
is a no-op; an event older than the state held changes nothing). The view answers one
question for the access check: is a record's location sensitive, so that no care
relationship at another location opens it."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.identity import LocationChanged, LocationCreated
from careloop_kit.locations import logged_if_stale
from careloop_kit.service import Runtime
from careloop_patients.store.locations import LocationViewRepository

log = logging.getLogger(__name__)


async def apply_location(
    runtime: Runtime, session: AsyncSession, event: LocationCreated | LocationChanged
) -> bool:
    """Take identity's state of a location into the view; False when the view already
    holds a later state."""
    applied = await LocationViewRepository(session).apply(
        event.org_id,
        event.location_id,
        sensitive=event.sensitive,
        changed_at=event.occurred_at,
        now=runtime.clock.now(),
    )
    return logged_if_stale(log, event, applied)


async def is_sensitive(session: AsyncSession, org_id: str, location_id: str | None) -> bool:
    """Whether a record's location is sensitive (a record without one is not)."""
    if location_id is None:
        return False
    return await LocationViewRepository(session).is_sensitive(org_id, location_id)
