"""Weekly availability, closures and open slots, computed in the location's time zone.

Templates are written in local wall-clock time ("Mondays 09:00-12:00"), because that
is how a clinic thinks; slots are computed per local date and only then converted to
UTC, so a 09:00 template yields a 09:00 slot on both sides of a DST change.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


class InvalidSchedule(ValueError):
    """A template, closure or slot request that makes no sense."""


@dataclass(frozen=True)
class WeeklyWindow:
    """One recurring window: `weekday` 0=Monday, local `start`..`end` at a location."""

    provider_id: str
    location_id: str
    weekday: int
    start: time
    end: time

    def __post_init__(self) -> None:
        if not 0 <= self.weekday <= 6:
            raise InvalidSchedule("weekday must be 0 (Monday) to 6 (Sunday)")
        if self.start >= self.end:
            raise InvalidSchedule("a window must end after it starts (same local day)")


@dataclass(frozen=True)
class Closure:
    """Local dates `first`..`last` (inclusive) on which a provider takes no visits;
    `location_id` None closes every location (leave), else one location (holiday)."""

    provider_id: str
    first: date
    last: date
    location_id: str | None = None

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise InvalidSchedule("a closure must end on or after its first day")

    def closes(self, location_id: str, day: date) -> bool:
        return (self.location_id in (None, location_id)) and self.first <= day <= self.last


@dataclass(frozen=True)
class Slot:
    provider_id: str
    location_id: str
    start_at: datetime
    end_at: datetime


@dataclass(frozen=True)
class Busy:
    """A provider's booked interval (UTC), whatever the location."""

    provider_id: str
    start_at: datetime
    end_at: datetime


MAX_SLOT_RANGE = timedelta(days=62)


def _local_dates(start: datetime, end: datetime, zone: ZoneInfo) -> Iterator[date]:
    day = start.astimezone(zone).date()
    last = end.astimezone(zone).date()
    while day <= last:
        yield day
        day += timedelta(days=1)


def _exists(local: datetime, zone: ZoneInfo) -> bool:
    """Whether a wall-clock time exists (not skipped by a spring-forward gap)."""
    back = local.replace(tzinfo=zone).astimezone(UTC).astimezone(zone)
    return back.replace(tzinfo=None) == local


def open_slots(
    *,
    windows: Iterable[WeeklyWindow],
    closures: Iterable[Closure],
    busy: Iterable[Busy],
    zone: ZoneInfo,
    duration: timedelta,
    start: datetime,
    end: datetime,
    not_before: datetime | None = None,
) -> list[Slot]:
    """Free slots of `duration` inside the windows, between `start` and `end` (UTC).

    Slots start at the window's local start and step by the duration; a slot must fit
    inside its window, skip closed days, overlap no busy interval of its provider and
    start no earlier than `not_before` (now: nobody books the past). Ambiguous local
    times (the repeated hour in autumn) take their first occurrence; times in the
    spring-forward gap do not exist and yield no slot.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidSchedule("slot ranges need timezone-aware bounds")
    if end <= start:
        raise InvalidSchedule("`to` must be after `from`")
    if end - start > MAX_SLOT_RANGE:
        raise InvalidSchedule(f"a slot search spans at most {MAX_SLOT_RANGE.days} days")
    if duration <= timedelta(0):
        raise InvalidSchedule("duration must be positive")
    windows, closures = list(windows), list(closures)
    busy_by_provider: dict[str, list[Busy]] = {}
    for interval in busy:
        busy_by_provider.setdefault(interval.provider_id, []).append(interval)
    found: list[Slot] = []
    for day in _local_dates(start, end, zone):
        for window in windows:
            if window.weekday != day.weekday():
                continue
            if any(
                c.provider_id == window.provider_id and c.closes(window.location_id, day)
                for c in closures
            ):
                continue
            local = datetime.combine(day, window.start)
            window_end = datetime.combine(day, window.end)
            while local + duration <= window_end:
                if _exists(local, zone):
                    # Wall-clock arithmetic in local time, then one conversion: the
                    # slot keeps its local start whatever the UTC offset that day.
                    slot_start = local.replace(tzinfo=zone).astimezone(UTC)
                    slot_end = (local + duration).replace(tzinfo=zone).astimezone(UTC)
                    if (
                        start <= slot_start
                        and slot_end <= end
                        and (not_before is None or slot_start >= not_before)
                        and not any(
                            b.start_at < slot_end and slot_start < b.end_at
                            for b in busy_by_provider.get(window.provider_id, ())
                        )
                    ):
                        found.append(
                            Slot(window.provider_id, window.location_id, slot_start, slot_end)
                        )
                local += duration
    found.sort(key=lambda s: (s.start_at, s.provider_id))
    return found
