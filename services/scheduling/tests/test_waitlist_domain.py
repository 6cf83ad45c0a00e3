"""The waitlist's pure rules: which entry a freed time suits, who is next in line,
when a round ends and what an acceptance means."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import pytest

from careloop_scheduling.domain.waitlist import (
    Answer,
    EntryStatus,
    FreedSlot,
    OfferStatus,
    PartOfDay,
    SlotStatus,
    WaitlistEntry,
    WaitlistOffer,
    answer,
    matches,
    next_in_line,
    part_of_day,
    round_expiry,
    validate_window,
)

pytestmark = pytest.mark.unit

NY = "America/New_York"
# Monday 2030-03-04 09:00 in New York (EST).
NINE = datetime(2030, 3, 4, 14, 0, tzinfo=UTC)
NOW = datetime(2030, 3, 1, 15, 0, tzinfo=UTC)

SLOT = FreedSlot(
    id="slot-1",
    org_id="org",
    provider_id="prov-1",
    location_id="loc-1",
    appointment_type_id="type-1",
    start_at=NINE,
    end_at=NINE + timedelta(minutes=30),
    source_appointment_id="appt-x",
    source_patient_id="pat-gone",
    created_at=NOW,
)


def entry(n: int, **changes: object) -> WaitlistEntry:
    base = WaitlistEntry(
        id=f"e-{n}",
        org_id="org",
        patient_id=f"pat-{n}",
        location_id="loc-1",
        appointment_type_id="type-1",
        earliest_date=date(2030, 3, 1),
        latest_date=date(2030, 3, 31),
        created_at=NOW,
        position=n,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "suits"),
    [
        ({}, True),
        ({"location_id": "loc-2"}, False),
        ({"appointment_type_id": "type-2"}, False),
        ({"provider_id": "prov-1"}, True),
        ({"provider_id": "prov-2"}, False),
        ({"earliest_date": date(2030, 3, 4), "latest_date": date(2030, 3, 4)}, True),
        ({"earliest_date": date(2030, 3, 5)}, False),
        ({"latest_date": date(2030, 3, 3)}, False),
        ({"weekdays": (0, 2)}, True),
        ({"weekdays": (1, 2, 3, 4)}, False),
        ({"parts_of_day": (PartOfDay.MORNING,)}, True),
        ({"parts_of_day": (PartOfDay.AFTERNOON, PartOfDay.EVENING)}, False),
        ({"status": EntryStatus.OFFERED}, False),
        ({"status": EntryStatus.REMOVED}, False),
        ({"patient_id": "pat-gone"}, False),
    ],
)
def test_a_freed_time_suits_an_entry_by_window_type_location_and_preferences(
    changes: dict[str, object], suits: bool
) -> None:
    assert matches(entry(1, **changes), SLOT, time_zone=NY) is suits


@pytest.mark.parametrize(
    ("hour", "part"),
    [
        (0, PartOfDay.MORNING),
        (11, PartOfDay.MORNING),
        (12, PartOfDay.AFTERNOON),
        (16, PartOfDay.AFTERNOON),
        (17, PartOfDay.EVENING),
        (23, PartOfDay.EVENING),
    ],
)
def test_parts_of_the_day(hour: int, part: PartOfDay) -> None:
    assert part_of_day(time(hour, 30)) is part


def test_the_local_date_decides_not_the_utc_one() -> None:
    # 20:00 on Monday in New York is already Tuesday in UTC.
    evening = replace(SLOT, start_at=datetime(2030, 3, 5, 1, 0, tzinfo=UTC))
    monday_only = entry(1, earliest_date=date(2030, 3, 4), latest_date=date(2030, 3, 4))
    assert matches(monday_only, evening, time_zone=NY)
    assert not matches(entry(2, parts_of_day=(PartOfDay.MORNING,)), evening, time_zone=NY)
    assert matches(entry(3, parts_of_day=(PartOfDay.EVENING,)), evening, time_zone=NY)


def test_moving_an_appointment_only_takes_an_earlier_time() -> None:
    mover = entry(1, appointment_id="appt-1")
    assert matches(mover, SLOT, time_zone=NY, current_start=NINE + timedelta(days=7))
    assert not matches(mover, SLOT, time_zone=NY, current_start=NINE)
    assert not matches(mover, SLOT, time_zone=NY, current_start=NINE - timedelta(days=1))


def test_next_in_line_is_first_in_first_offered_one_offer_per_patient() -> None:
    entries = [entry(5), entry(2), entry(9), entry(3, patient_id="pat-2"), entry(7)]
    chosen = next_in_line(entries, already_offered=[], batch=3)
    assert [e.id for e in chosen] == ["e-2", "e-5", "e-7"]
    after = next_in_line(entries, already_offered=["e-2", "e-5", "e-7"], batch=3)
    # e-3 belongs to pat-2, whose older entry e-2 already had its offer of this time.
    assert [e.id for e in after] == ["e-3", "e-9"]


def test_a_round_ends_after_the_ttl_but_never_within_the_notice_before_the_start() -> None:
    ttl, notice = timedelta(hours=1), timedelta(hours=1)
    assert round_expiry(NOW, NINE, ttl=ttl, min_notice=notice) == NOW + ttl
    soon = NOW + timedelta(minutes=90)
    assert round_expiry(NOW, soon, ttl=ttl, min_notice=notice) == NOW + timedelta(minutes=30)
    assert round_expiry(NOW, NOW + timedelta(minutes=59), ttl=ttl, min_notice=notice) is None


def test_an_acceptance_books_only_an_open_unexpired_offer_of_an_open_slot() -> None:
    offer = WaitlistOffer(
        id="o-1",
        org_id="org",
        slot_id=SLOT.id,
        entry_id="e-1",
        patient_id="pat-1",
        round=1,
        created_at=NOW,
        expires_at=NOW + timedelta(hours=1),
    )
    assert answer(offer, SLOT, NOW) is Answer.BOOK
    assert answer(offer, SLOT, NOW + timedelta(hours=1)) is Answer.LATE
    assert answer(offer, replace(SLOT, status=SlotStatus.FILLED), NOW) is Answer.LATE
    for status in (OfferStatus.TAKEN, OfferStatus.EXPIRED, OfferStatus.WITHDRAWN):
        assert answer(replace(offer, status=status), SLOT, NOW) is Answer.LATE
    assert answer(replace(offer, status=OfferStatus.ACCEPTED), SLOT, NOW) is (
        Answer.ALREADY_ACCEPTED
    )


@pytest.mark.parametrize(
    ("earliest", "latest", "weekdays", "refused"),
    [
        (date(2030, 3, 1), date(2030, 3, 31), None, False),
        (date(2030, 3, 10), date(2030, 3, 2), None, True),
        (date(2030, 2, 1), date(2030, 2, 28), None, True),
        (date(2030, 3, 1), date(2030, 3, 31), [], True),
        (date(2030, 3, 1), date(2030, 3, 31), [7], True),
        (date(2030, 3, 1), date(2030, 3, 31), [0, 6], False),
    ],
)
def test_windows_are_checked(
    earliest: date, latest: date, weekdays: list[int] | None, refused: bool
) -> None:
    why = validate_window(earliest, latest, weekdays, today=date(2030, 3, 1))
    assert (why is not None) is refused
