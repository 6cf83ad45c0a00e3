"""Location rules."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class InvalidTimeZone(ValueError):
    """Not an IANA time zone name."""


def validate_time_zone(name: str) -> str:
    """`name` if it is an IANA time zone known to this system, else `InvalidTimeZone`."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        raise InvalidTimeZone(f"{name!r} is not an IANA time zone such as America/Chicago.")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidTimeZone(
            f"{name!r} is not an IANA time zone such as America/Chicago."
        ) from exc
    return name
