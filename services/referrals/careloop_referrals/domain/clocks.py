"""Clocks per stage: how long a referral may wait in a stage before it is stalled.

A stalled referral puts a task on the location's worklist; if it is still in the same
stage `escalate_after` later, the task escalates. The clocks depend on urgency, and an
organization (then a location) may set its own for any urgency and stage: the most
specific setting wins, a missing one inherits.

The defaults follow the order of magnitude practices hold themselves to: a routine
referral triaged within two business days, a stat one within hours.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from careloop_referrals.domain.referral import Referral, Stage, Urgency


@dataclass(frozen=True)
class StageClock:
    stall_after: timedelta
    escalate_after: timedelta


ClockLayer = Mapping[tuple[Urgency, Stage], StageClock]
"""Clocks one level (organization or location) sets; what it leaves out it inherits."""


# Per stage that waits on someone at the practice: (stall after, escalate after) in hours,
# for routine, urgent and stat referrals. `seen` waits on the outcome note; `scheduled` is
# a safety net for visits that never report back (the appointment's events move it).
_HOURS: dict[Stage, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    # stage: (routine, urgent, stat)
    Stage.RECEIVED: ((48, 24), (8, 4), (1, 1)),
    Stage.TRIAGED: ((72, 48), (24, 8), (4, 2)),
    Stage.AUTHORIZATION_PENDING: ((120, 72), (48, 24), (8, 4)),
    Stage.AUTHORIZED: ((72, 48), (24, 8), (4, 2)),
    Stage.DENIED: ((72, 48), (24, 8), (4, 2)),
    Stage.PATIENT_CONTACTED: ((120, 72), (48, 24), (8, 4)),
    Stage.SCHEDULED: ((45 * 24, 7 * 24), (14 * 24, 2 * 24), (3 * 24, 24)),
    Stage.SEEN: ((7 * 24, 3 * 24), (72, 24), (24, 8)),
}
_URGENCIES = (Urgency.ROUTINE, Urgency.URGENT, Urgency.STAT)

DEFAULT_CLOCKS: Mapping[Urgency, Mapping[Stage, StageClock]] = {
    urgency: {
        stage: StageClock(timedelta(hours=row[column][0]), timedelta(hours=row[column][1]))
        for stage, row in _HOURS.items()
    }
    for column, urgency in enumerate(_URGENCIES)
}


WAITING_STAGES: frozenset[Stage] = frozenset(_HOURS)
"""The stages that have a clock (each waits on someone at the practice)."""


class InvalidClock(ValueError):
    """A clock setting breaks a rule; the message names it."""


def checked_layer(layer: ClockLayer) -> ClockLayer:
    """The layer, or `InvalidClock` naming its first broken rule."""
    for (urgency, stage), clock in layer.items():
        if stage not in WAITING_STAGES:
            raise InvalidClock(f"{stage} waits on no one, so it has no clock.")
        if clock.stall_after <= timedelta(0) or clock.escalate_after <= timedelta(0):
            raise InvalidClock(f"The {urgency} clock of {stage} must be longer than zero.")
        if clock.stall_after > timedelta(days=365) or clock.escalate_after > timedelta(days=365):
            raise InvalidClock(f"The {urgency} clock of {stage} is longer than a year.")
    return layer


def clock_source(urgency: Urgency, stage: Stage, *layers: ClockLayer) -> int:
    """Which layer sets the clock `clock_for` returns: its index in `layers`, or -1 for
    the default."""
    for index in range(len(layers) - 1, -1, -1):
        if (urgency, stage) in layers[index]:
            return index
    return -1


def clock_for(urgency: Urgency, stage: Stage, *layers: ClockLayer) -> StageClock | None:
    """The clock of `stage` at `urgency`: the last layer that sets it (pass the
    organization's, then the location's), else the default; None for a stage that waits
    on no one (a finished referral)."""
    for layer in reversed(layers):
        if (urgency, stage) in layer:
            return layer[(urgency, stage)]
    return DEFAULT_CLOCKS[urgency].get(stage)


@dataclass(frozen=True)
class StageDeadlines:
    stalled_at: datetime
    escalate_at: datetime


def deadlines(referral: Referral, *layers: ClockLayer) -> StageDeadlines | None:
    """When the referral's current stage stalls and escalates, or None if nothing waits."""
    if not referral.is_open:
        return None
    clock = clock_for(referral.urgency, referral.stage, *layers)
    if clock is None:
        return None
    stalled_at = referral.stage_entered_at + clock.stall_after
    return StageDeadlines(stalled_at, stalled_at + clock.escalate_after)
