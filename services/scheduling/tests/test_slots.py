"""Open slots are computed in the location's local time, whatever the UTC offset."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from careloop_scheduling.domain.availability import (
    Busy,
    Closure,
    InvalidSchedule,
    Slot,
    WeeklyWindow,
    open_slots,
)

pytestmark = pytest.mark.unit

NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")
SUNDAY = 6
HOUR = timedelta(hours=1)


def sunday_morning(provider: str = "dr-a", location: str = "loc-1") -> WeeklyWindow:
    return WeeklyWindow(provider, location, SUNDAY, time(9), time(12))


def slots_on(
    day: date,
    zone: ZoneInfo,
    windows: list[WeeklyWindow],
    *,
    closures: list[Closure] | None = None,
    busy: list[Busy] | None = None,
    duration: timedelta = HOUR,
    not_before: datetime | None = None,
) -> list[Slot]:
    """The open slots of one local day."""
    start = datetime.combine(day, time(0), zone).astimezone(UTC)
    return open_slots(
        windows=windows,
        closures=closures or [],
        busy=busy or [],
        zone=zone,
        duration=duration,
        start=start,
        end=start + timedelta(days=1),
        not_before=not_before,
    )


def local_starts(slots: list[Slot], zone: ZoneInfo) -> list[str]:
    return [s.start_at.astimezone(zone).strftime("%H:%M") for s in slots]


def test_a_morning_template_yields_local_nine_ten_eleven_on_both_sides_of_dst() -> None:
    before = slots_on(date(2030, 3, 3), NEW_YORK, [sunday_morning()])  # EST, UTC-5
    dst_day = slots_on(date(2030, 3, 10), NEW_YORK, [sunday_morning()])  # EDT from 02:00
    after_fall_back = slots_on(date(2030, 11, 3), NEW_YORK, [sunday_morning()])  # EST again

    for slots in (before, dst_day, after_fall_back):
        assert local_starts(slots, NEW_YORK) == ["09:00", "10:00", "11:00"]
    assert before[0].start_at == datetime(2030, 3, 3, 14, 0, tzinfo=UTC)
    assert dst_day[0].start_at == datetime(2030, 3, 10, 13, 0, tzinfo=UTC)
    assert after_fall_back[0].start_at == datetime(2030, 11, 3, 14, 0, tzinfo=UTC)
    assert all(s.end_at - s.start_at == HOUR for s in dst_day)


def test_the_skipped_hour_of_spring_forward_yields_no_slot() -> None:
    night = WeeklyWindow("dr-a", "loc-1", SUNDAY, time(1), time(4))

    slots = slots_on(date(2030, 3, 10), NEW_YORK, [night])

    assert local_starts(slots, NEW_YORK) == ["01:00", "03:00"]


def test_another_zone_keeps_its_own_local_times() -> None:
    window = WeeklyWindow("dr-b", "loc-in", 0, time(9), time(10, 30))

    slots = slots_on(date(2030, 3, 11), KOLKATA, [window], duration=timedelta(minutes=30))

    assert local_starts(slots, KOLKATA) == ["09:00", "09:30", "10:00"]
    assert slots[0].start_at == datetime(2030, 3, 11, 3, 30, tzinfo=UTC)


def test_slots_must_fit_inside_the_window() -> None:
    window = WeeklyWindow("dr-a", "loc-1", SUNDAY, time(9), time(10, 45))

    slots = slots_on(date(2030, 3, 3), NEW_YORK, [window], duration=timedelta(minutes=40))

    assert local_starts(slots, NEW_YORK) == ["09:00", "09:40"]


def test_closures_close_their_location_or_every_location() -> None:
    windows = [sunday_morning(location="loc-1"), sunday_morning(location="loc-2")]
    day = date(2030, 3, 3)
    holiday = Closure("dr-a", day, day, location_id="loc-1")
    leave = Closure("dr-a", date(2030, 3, 1), date(2030, 3, 5))

    on_holiday = slots_on(day, NEW_YORK, windows, closures=[holiday])
    on_leave = slots_on(day, NEW_YORK, windows, closures=[leave])
    other_provider = slots_on(day, NEW_YORK, windows, closures=[Closure("dr-z", day, day)])

    assert {s.location_id for s in on_holiday} == {"loc-2"}
    assert on_leave == []
    assert len(other_provider) == 6


def test_booked_time_of_the_provider_is_not_offered_anywhere() -> None:
    day = date(2030, 3, 3)
    nine = datetime(2030, 3, 3, 14, 0, tzinfo=UTC)
    busy = [Busy("dr-a", nine + timedelta(minutes=30), nine + timedelta(minutes=90))]

    slots = slots_on(day, NEW_YORK, [sunday_morning()], busy=busy)

    assert local_starts(slots, NEW_YORK) == ["11:00"]


def test_slots_in_the_past_are_not_offered() -> None:
    now = datetime(2030, 3, 3, 14, 30, tzinfo=UTC)  # 09:30 local

    slots = slots_on(date(2030, 3, 3), NEW_YORK, [sunday_morning()], not_before=now)

    assert local_starts(slots, NEW_YORK) == ["10:00", "11:00"]


def test_invalid_windows_closures_and_ranges_are_refused() -> None:
    with pytest.raises(InvalidSchedule):
        WeeklyWindow("dr-a", "loc-1", 7, time(9), time(10))
    with pytest.raises(InvalidSchedule):
        WeeklyWindow("dr-a", "loc-1", 0, time(10), time(9))
    with pytest.raises(InvalidSchedule):
        Closure("dr-a", date(2030, 1, 2), date(2030, 1, 1))
    start = datetime(2030, 1, 1, tzinfo=UTC)
    for end in (start, start + timedelta(days=90)):
        with pytest.raises(InvalidSchedule):
            open_slots(
                windows=[],
                closures=[],
                busy=[],
                zone=NEW_YORK,
                duration=HOUR,
                start=start,
                end=end,
            )
