"""Referrals' view of locations, kept from identity's `LocationCreated` /
`LocationChanged` in the transaction of the consumer's inbox mark (a redelivered event
is a no-op; an event older than the state held changes nothing). A message to a
referred patient is signed with the location's name, in its zone, neutrally when it is
sensitive (`usecases.contact`)."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.identity import LocationChanged, LocationCreated
from careloop_kit.locations import logged_if_stale
from careloop_kit.service import Runtime
from careloop_referrals.store.locations import LocationInfo, LocationViewRepository

log = logging.getLogger(__name__)


async def apply_location(
    runtime: Runtime, session: AsyncSession, event: LocationCreated | LocationChanged
) -> bool:
    """Take identity's state of a location into the view; False when the view already
    holds a later state."""
    applied = await LocationViewRepository(session).apply(
        event.org_id,
        event.location_id,
        LocationInfo(event.name, event.time_zone, event.sensitive),
        changed_at=event.occurred_at,
        now=runtime.clock.now(),
    )
    return logged_if_stale(log, event, applied)
