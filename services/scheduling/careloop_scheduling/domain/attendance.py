"""A patient's attendance history: the counts the no-show model needs.

Pure: turns the patient's appointments (with the moment each last changed) into
counts as of a moment. Only visits that started before that moment count, so a
feature computed from it never looks at the visit being predicted or later ones
(`domain/clinical-intelligence.md`: history "computed strictly from earlier visits").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from careloop_scheduling.domain.appointment import Appointment, AppointmentStatus

NO_SHOW_TIMER_KIND = "no_show_check"

# A cancellation this close to the start rarely lets the slot be filled again, which
# is why late cancellations are counted apart: they cost the clinic like a no-show.
LATE_CANCELLATION = timedelta(hours=24)

DEFAULT_WINDOW = timedelta(days=730)


def no_show_key(appointment_id: str) -> str:
    """Dedup key of the appointment's no-show check; it shares the `<id>:` prefix of
    the reminder keys, so cancelling the appointment's timers by prefix ends it too."""
    return f"{appointment_id}:no-show"


@dataclass(frozen=True)
class PastVisit:
    """One appointment and when it last changed (for a cancelled one: when it was
    cancelled, since a cancelled appointment never changes again)."""

    appointment: Appointment
    changed_at: datetime


@dataclass(frozen=True)
class AttendanceSummary:
    """Counts over the visits that started in `[since, as_of)`.

    `attended` is arrived plus fulfilled; `cancelled` includes `rescheduled` (a
    reschedule cancels the old appointment); `late_cancelled` counts cancellations,
    reschedules included, made less than 24 h before the start; `unresolved` are
    visits past their start still `booked` or `proposed` (their no-show check has not
    fired yet). `no_show_rate` is no-shows over attended plus no-shows, or None
    without any resolved visit.
    """

    since: datetime
    as_of: datetime
    total: int
    attended: int
    no_show: int
    cancelled: int
    rescheduled: int
    late_cancelled: int
    unresolved: int

    @property
    def no_show_rate(self) -> float | None:
        resolved = self.attended + self.no_show
        return None if resolved == 0 else self.no_show / resolved


_ATTENDED = frozenset({AppointmentStatus.ARRIVED, AppointmentStatus.FULFILLED})
_WAITING = frozenset({AppointmentStatus.PROPOSED, AppointmentStatus.BOOKED})


def in_window(visit: PastVisit, *, since: datetime, as_of: datetime) -> bool:
    return since <= visit.appointment.start_at < as_of


def summarize(
    visits: Iterable[PastVisit], *, since: datetime, as_of: datetime
) -> AttendanceSummary:
    """Attendance counts of the visits that started in `[since, as_of)`."""
    counted = [v for v in visits if in_window(v, since=since, as_of=as_of)]
    statuses = [v.appointment.status for v in counted]
    cancelled = [v for v in counted if v.appointment.status is AppointmentStatus.CANCELLED]
    return AttendanceSummary(
        since=since,
        as_of=as_of,
        total=len(counted),
        attended=sum(s in _ATTENDED for s in statuses),
        no_show=statuses.count(AppointmentStatus.NOSHOW),
        cancelled=len(cancelled),
        rescheduled=sum(v.appointment.rescheduled_to_id is not None for v in cancelled),
        late_cancelled=sum(
            v.appointment.start_at - v.changed_at < LATE_CANCELLATION for v in cancelled
        ),
        unresolved=sum(s in _WAITING for s in statuses),
    )
