"""The locations consumer: identity's location events keep referrals' view of them
(`usecases.locations.apply_location`)."""

from __future__ import annotations

from careloop_kit.locations import location_consumer
from careloop_referrals.usecases.locations import apply_location

LOCATIONS_CONSUMER = location_consumer(apply_location)
