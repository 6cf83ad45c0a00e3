"""Reminder settings an organization, a location or an appointment type overrides.

Pure: turns the stored levels into the inputs of `reminders.plan` (the effective
sequence and quiet hours). Each level stores only what it changes, so a change to
the evidence-based default reaches everyone who did not deliberately diverge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time, timedelta
from enum import StrEnum

from careloop_scheduling.domain.appointment import AppointmentStatus
from careloop_scheduling.domain.reminders import (
    DEFAULT_QUIET_HOURS,
    DEFAULT_SEQUENCE,
    QuietHours,
    ReminderSequence,
    SequenceOverride,
    TouchOverride,
    resolve_sequence,
)

TIMER_KIND = "reminder"

# Settings may only edit the touches of the default sequence: a partial edit of an
# unknown touch is a typo (the planner refuses it too), and custom touches need a
# contract for messaging's templates first.
KNOWN_TOUCHES: tuple[str, ...] = tuple(t.name for t in DEFAULT_SEQUENCE.touches)
AT_BOOKING_TOUCHES = frozenset({"confirmation"})

# Only an appointment that still waits for the patient gets reminders: an arrived,
# fulfilled, missed or cancelled one must not ask the patient to come.
REMINDABLE_STATUSES = frozenset({AppointmentStatus.PROPOSED, AppointmentStatus.BOOKED})


class Level(StrEnum):
    """Where a reminder setting applies; the more specific level wins."""

    ORGANIZATION = "organization"
    LOCATION = "location"
    APPOINTMENT_TYPE = "appointment_type"


@dataclass(frozen=True)
class ReminderSettings:
    """What one level changes; `None` (or a missing touch) inherits from the level above.

    Quiet hours are a pair: a level sets both ends or neither, so combining levels can
    never produce an empty or inverted window nobody wrote.
    """

    send_time: time | None = None
    min_spacing: timedelta | None = None
    touches: Mapping[str, TouchOverride] = field(default_factory=dict)
    quiet_hours: QuietHours | None = None

    def as_override(self) -> SequenceOverride:
        return SequenceOverride(
            send_time=self.send_time, min_spacing=self.min_spacing, touches=dict(self.touches)
        )


def effective(
    organization: ReminderSettings | None = None,
    location: ReminderSettings | None = None,
    appointment_type: ReminderSettings | None = None,
) -> tuple[ReminderSequence, QuietHours]:
    """The sequence and quiet hours for one appointment (most specific level wins)."""
    levels = (organization, location, appointment_type)
    sequence = resolve_sequence(*(None if s is None else s.as_override() for s in levels))
    quiet = DEFAULT_QUIET_HOURS
    for level in levels:
        if level is not None and level.quiet_hours is not None:
            quiet = level.quiet_hours
    return sequence, quiet
