"""Leakage of outbound referrals: the patient we sent to an outside specialist who never
gets there, goes somewhere else, or whose visit never reports back. Each is its own
follow-up (a different call to make), so each is detected on its own:

- `never-scheduled`: the referral is still before `scheduled` a while after it was sent
  (the patient has not booked with the specialist);
- `scheduled-elsewhere`: the referral is redirected (the patient chose, or was sent to,
  another provider than the one we referred to);
- `no-report-back`: the patient was seen and no outcome came back a while later.

The waits depend on urgency; inbound referrals have no leakage (their stages are ours
and run on the stage clocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from careloop_referrals.domain.referral import Direction, Referral, Stage, Urgency


class Leakage(StrEnum):
    NEVER_SCHEDULED = "never-scheduled"
    SCHEDULED_ELSEWHERE = "scheduled-elsewhere"
    NO_REPORT_BACK = "no-report-back"


# (never scheduled after, no report back after) in days, per urgency.
_DAYS: dict[Urgency, tuple[int, int]] = {
    Urgency.ROUTINE: (30, 14),
    Urgency.URGENT: (10, 7),
    Urgency.STAT: (3, 3),
}
_BEFORE_SCHEDULED = frozenset(
    {
        Stage.RECEIVED,
        Stage.TRIAGED,
        Stage.AUTHORIZATION_PENDING,
        Stage.AUTHORIZED,
        Stage.DENIED,
        Stage.PATIENT_CONTACTED,
    }
)


@dataclass(frozen=True)
class LeakageWatch:
    """A check to run at `due`: the referral leaked as `leakage` if it is still where it
    was when the watch was set."""

    leakage: Leakage
    due: datetime


def watches(referral: Referral) -> list[LeakageWatch]:
    """The leakage checks a referral that just entered its stage needs."""
    if referral.direction is not Direction.OUTBOUND:
        return []
    unscheduled_days, unreported_days = _DAYS[referral.urgency]
    if referral.stage is Stage.RECEIVED:
        due = referral.created_at + timedelta(days=unscheduled_days)
        return [LeakageWatch(Leakage.NEVER_SCHEDULED, due)]
    if referral.stage is Stage.SEEN:
        due = referral.stage_entered_at + timedelta(days=unreported_days)
        return [LeakageWatch(Leakage.NO_REPORT_BACK, due)]
    return []


def leaked(referral: Referral, leakage: Leakage, *, watched_version: int) -> bool:
    """Whether the referral, when its watch runs, shows the leakage it was set for."""
    if leakage is Leakage.NEVER_SCHEDULED:
        return referral.stage in _BEFORE_SCHEDULED
    if leakage is Leakage.NO_REPORT_BACK:
        return referral.stage is Stage.SEEN and referral.version == watched_version
    return False


def leaked_now(referral: Referral) -> Leakage | None:
    """A leakage the step itself shows: an outbound referral redirected elsewhere."""
    if referral.direction is Direction.OUTBOUND and referral.stage is Stage.REDIRECTED:
        return Leakage.SCHEDULED_ELSEWHERE
    return None
