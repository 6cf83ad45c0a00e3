"""The locations consumer: identity's `LocationCreated` / `LocationChanged` (on
`careloop.identity`) go to `usecases.locations.apply_location`, in the transaction of
the kit's inbox mark, so a redelivered event is a no-op. The other identity events on
the topic are skipped."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import Envelope, Event
from careloop_contracts.identity import LocationChanged, LocationCreated
from careloop_kit.bus.consumer import Handler
from careloop_kit.service import ConsumerSpec, Runtime
from careloop_patients.usecases.locations import apply_location


def location_handlers(runtime: Runtime) -> Mapping[str, Handler]:
    """Handlers of the locations consumer: both location events, applied alike."""

    async def on_location(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        if not isinstance(event, LocationCreated | LocationChanged):
            raise TypeError(f"expected a location event, got {type(event).__name__}")
        await apply_location(runtime, session, event)

    return {LocationCreated.event_type: on_location, LocationChanged.event_type: on_location}


LOCATIONS_CONSUMER = ConsumerSpec(
    name="locations", topics=(LocationCreated.topic,), handlers=location_handlers
)
