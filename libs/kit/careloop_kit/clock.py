"""Injectable time source, so tests can move time instead of sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        """Move time forward by `delta`."""
        self._now += delta

    def set(self, moment: datetime) -> None:
        """Jump to an absolute moment (must be timezone-aware)."""
        if moment.tzinfo is None:
            raise ValueError("FrozenClock needs a timezone-aware datetime")
        self._now = moment
