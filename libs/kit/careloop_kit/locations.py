"""The consumer every service uses to keep its own view of identity's locations.

Identity owns locations and publishes their whole state as `LocationCreated` /
`LocationChanged` on `careloop.identity`. A service that needs locations (time zone,
sensitivity, feature switches) keeps a view of them; only what it stores differs, so the
consumer is declared once here and each service passes the step that applies an event.
The step runs in the transaction of the kit's inbox mark, so a redelivered event is a
no-op. The other identity events on the topic (sessions, roles, break-glass, access
records) are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.identity import LocationChanged, LocationCreated
from careloop_kit.consumers import step_consumer
from careloop_kit.service import ConsumerSpec, Runtime

ApplyLocation = Callable[
    [Runtime, AsyncSession, LocationCreated | LocationChanged], Awaitable[object]
]


def location_consumer(apply_location: ApplyLocation) -> ConsumerSpec:
    """The `locations` consumer group: both location events go to `apply_location`."""
    return step_consumer(
        "locations",
        (LocationCreated, LocationChanged),
        apply_location,
        described_as="a location event",
    )


def logged_if_stale(
    log: logging.Logger, event: LocationCreated | LocationChanged, applied: bool
) -> bool:
    """`applied`, the outcome of applying `event` to a view; when the view already held
    a later state, that is logged on the service's own `log` first."""
    if not applied:
        log.info(
            "location %s: %s of %s is older than the view, skipped",
            event.location_id,
            event.event_type,
            event.occurred_at.isoformat(),
        )
    return applied


async def apply_location_state(
    session: AsyncSession,
    view: Table,
    *,
    org_id: str,
    location_id: str,
    values: Mapping[str, Any],
    changed_at: datetime,
    now: datetime,
) -> bool:
    """Write identity's state of a location into a service's `view` (a table keyed by
    `org_id` and `id`, with `changed_at` and `updated_at` columns); False, and nothing
    written, when the view already holds a later state. An equal time is applied: one
    location's events arrive in order on its partition, so the later arrival is the
    later change. A row without `changed_at` (set before the events existed) is
    overwritten."""
    row = {**values, "changed_at": changed_at, "updated_at": now}
    statement = insert(view).values(org_id=org_id, id=location_id, **row)
    newer = view.c.changed_at.is_(None) | (view.c.changed_at <= statement.excluded.changed_at)
    result = await session.execute(
        statement.on_conflict_do_update(
            index_elements=[view.c.org_id, view.c.id],
            set_=row,
            where=newer,
        ).returning(view.c.id)
    )
    return result.first() is not None
