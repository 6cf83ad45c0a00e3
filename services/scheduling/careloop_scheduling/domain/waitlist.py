"""The waitlist: patients who want a time sooner than the grid offers, and the offers
made to them when a booked time frees up.

A freed time (a cancellation, or the old half of a reschedule) becomes a `FreedSlot`.
It is offered in rounds: each round offers it to the next `batch` matching entries in
waitlist order (first in, first offered), one offer each, valid until the round's
expiry. The first patient to accept books it and every other open offer of the slot
closes as `taken`; when a round expires unanswered its offers close as `expired` and the
next entries in line get theirs. Pure rules here: which entry matches which time, when
a round ends, what an answer means. No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

WAITLIST_TIMER_KIND = "waitlist_round"
"""Kind of the durable timer that ends an offer round."""


class EntryStatus(StrEnum):
    WAITING = "waiting"
    OFFERED = "offered"
    BOOKED = "booked"
    REMOVED = "removed"
    EXPIRED = "expired"


ACTIVE_ENTRY_STATUSES = frozenset({EntryStatus.WAITING, EntryStatus.OFFERED})
"""Entries still on the list (listed by default, refused as duplicates)."""


class PartOfDay(StrEnum):
    """Local wall-clock parts of a day a patient can come: before noon, noon to five,
    from five."""

    MORNING = "morning"
    AFTERNOON = "afternoon"
    EVENING = "evening"


_NOON, _FIVE_PM = time(12, 0), time(17, 0)


def part_of_day(local: time) -> PartOfDay:
    if local < _NOON:
        return PartOfDay.MORNING
    return PartOfDay.AFTERNOON if local < _FIVE_PM else PartOfDay.EVENING


class SlotStatus(StrEnum):
    OPEN = "open"  # offers may be out; nobody has it yet
    FILLED = "filled"  # a waitlisted patient accepted and booked it
    LAPSED = "lapsed"  # nobody left to offer it to, too close to the start, or taken otherwise


class OfferStatus(StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    TAKEN = "taken"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True)
class WaitlistEntry:
    id: str
    org_id: str
    patient_id: str
    location_id: str
    appointment_type_id: str
    earliest_date: date
    latest_date: date
    created_at: datetime
    provider_id: str | None = None
    weekdays: tuple[int, ...] | None = None
    """Local weekdays the patient can come (0 Monday .. 6 Sunday); None: any."""
    parts_of_day: tuple[PartOfDay, ...] | None = None
    """Local parts of the day the patient can come; None: any."""
    appointment_id: str | None = None
    """An existing appointment to move to an earlier freed time."""
    status: EntryStatus = EntryStatus.WAITING
    booked_appointment_id: str | None = None
    position: int = 0
    """Waitlist order (a database sequence): lower was added first."""


@dataclass(frozen=True)
class FreedSlot:
    """A booked time that became free: one provider, one location, one type's length."""

    id: str
    org_id: str
    provider_id: str
    location_id: str
    appointment_type_id: str
    start_at: datetime
    end_at: datetime
    source_appointment_id: str
    source_patient_id: str
    created_at: datetime
    status: SlotStatus = SlotStatus.OPEN
    round: int = 0
    filled_by_entry_id: str | None = None
    appointment_id: str | None = None


@dataclass(frozen=True)
class WaitlistOffer:
    id: str
    org_id: str
    slot_id: str
    entry_id: str
    patient_id: str
    round: int
    created_at: datetime
    expires_at: datetime
    status: OfferStatus = OfferStatus.OPEN


def matches(
    entry: WaitlistEntry,
    slot: FreedSlot,
    *,
    time_zone: str,
    current_start: datetime | None = None,
) -> bool:
    """Whether the freed time suits the entry: same location and appointment type (the
    type fixes the length and the kind of visit), the entry's provider if it named one,
    the local date within its window, its weekdays and parts of the day. An entry that
    moves an existing appointment (`current_start`) only takes an earlier time."""
    if entry.status is not EntryStatus.WAITING:
        return False
    if (entry.location_id, entry.appointment_type_id) != (
        slot.location_id,
        slot.appointment_type_id,
    ):
        return False
    if entry.provider_id is not None and entry.provider_id != slot.provider_id:
        return False
    if entry.patient_id == slot.source_patient_id:
        # The patient who just gave the time up does not want it back.
        return False
    local = slot.start_at.astimezone(ZoneInfo(time_zone))
    if not entry.earliest_date <= local.date() <= entry.latest_date:
        return False
    if entry.weekdays is not None and local.weekday() not in entry.weekdays:
        return False
    if entry.parts_of_day is not None and part_of_day(local.time()) not in entry.parts_of_day:
        return False
    return current_start is None or slot.start_at < current_start


def next_in_line(
    candidates: Iterable[WaitlistEntry], *, already_offered: Iterable[str], batch: int
) -> list[WaitlistEntry]:
    """The next `batch` entries in waitlist order that have not been offered this slot
    yet, one per patient (a patient on the list twice gets one offer, from the older
    entry)."""
    skip = set(already_offered)
    chosen: list[WaitlistEntry] = []
    patients: set[str] = set()
    for entry in sorted(candidates, key=lambda e: e.position):
        if entry.id in skip or entry.patient_id in patients:
            continue
        chosen.append(entry)
        patients.add(entry.patient_id)
        if len(chosen) == batch:
            break
    return chosen


def round_expiry(
    now: datetime, start_at: datetime, *, ttl: timedelta, min_notice: timedelta
) -> datetime | None:
    """When a round started now ends: after `ttl`, but never later than `min_notice`
    before the start (an acceptance must leave time to get there). None: too late to
    offer the time at all."""
    expires = min(now + ttl, start_at - min_notice)
    return expires if expires > now else None


class Answer(StrEnum):
    """What a patient's acceptance of an offer leads to."""

    BOOK = "book"
    LATE = "late"  # the offer closed (expired, taken, withdrawn) or the slot is gone
    ALREADY_ACCEPTED = "already_accepted"  # a repeated `Y` after booking: nothing


def answer(offer: WaitlistOffer, slot: FreedSlot, now: datetime) -> Answer:
    """An acceptance books the slot only while both the offer and the slot are open and
    the offer has not expired (the round timer may not have run yet)."""
    if offer.status is OfferStatus.ACCEPTED:
        return Answer.ALREADY_ACCEPTED
    if offer.status is not OfferStatus.OPEN or slot.status is not SlotStatus.OPEN:
        return Answer.LATE
    if now >= offer.expires_at:
        return Answer.LATE
    return Answer.BOOK


def validate_window(
    earliest: date,
    latest: date,
    weekdays: Sequence[int] | None,
    *,
    today: date,
) -> str | None:
    """Why an entry's window cannot be used, or None."""
    if latest < earliest:
        return "latest_date is before earliest_date."
    if latest < today:
        return "The window has already passed."
    if weekdays is not None and (not weekdays or any(not 0 <= d <= 6 for d in weekdays)):
        return "weekdays are 0 (Monday) to 6 (Sunday), at least one."
    return None
