"""The locations consumer: identity's location events kept in scheduling's view of locations
(`usecases.locations.apply_location`), through the kit's one location consumer."""

from __future__ import annotations

from careloop_kit.locations import location_consumer
from careloop_scheduling.usecases.locations import apply_location

LOCATIONS_CONSUMER = location_consumer(apply_location)
