"""A practice time zone in which it is daytime when the test runs.

The e2e practices book a visit and expect the at-booking confirmation at once. Quiet
hours (20:00-08:00 local by default) rightly hold that text until morning, so a
practice fixed in one zone made these tests fail whenever CI ran in that zone's
evening. The zones below are at most five hours apart around the globe, so one of
them is always within three hours of local midday. The zone is chosen once per
test session, so every e2e practice shares it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

CANDIDATE_ZONES = (
    "Pacific/Honolulu",
    "America/Chicago",
    "America/Sao_Paulo",
    "Europe/London",
    "Asia/Kolkata",
    "Asia/Tokyo",
)
_MIDDAY_HOURS = 12.5


def daytime_zone(now: datetime | None = None) -> ZoneInfo:
    """The candidate zone whose local time at `now` is closest to midday."""
    instant = now or datetime.now(UTC)

    def distance_from_midday(zone: ZoneInfo) -> float:
        local = instant.astimezone(zone)
        return abs(local.hour + local.minute / 60 - _MIDDAY_HOURS)

    return min((ZoneInfo(name) for name in CANDIDATE_ZONES), key=distance_from_midday)


PRACTICE_ZONE = daytime_zone()
