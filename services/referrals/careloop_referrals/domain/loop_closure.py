"""Loop-closure figures: the headline measure of a referral programme.

Definitions (the same in the API, the docs and analytics):

- **cohort**: referrals created in the period, attributed to the location and the
  referring provider they were created for. Redirected referrals left the practice's
  loop on purpose and are not counted; cancelled, declined and expired ones are (they
  are loops that did not close).
- **share closed**: referrals of the cohort whose outcome was reported to the referring
  provider, over the cohort.
- **median days to scheduled / seen / report**: from creation to the first time the
  referral entered that stage, over the referrals that reached it; None when none did.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from statistics import median
from typing import TypeVar

from careloop_referrals.domain.referral import Referral, Stage, Transition

_DAY_SECONDS = 86_400

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class ReferralHistory:
    referral: Referral
    transitions: Sequence[Transition]

    def first_entered(self, stage: Stage) -> datetime | None:
        times = [t.at for t in self.transitions if t.to_stage is stage]
        return min(times) if times else None


@dataclass(frozen=True)
class LoopClosure:
    referrals: int
    closed: int
    median_days_to_scheduled: float | None
    median_days_to_seen: float | None
    median_days_to_report: float | None

    @property
    def share_closed(self) -> float | None:
        return self.closed / self.referrals if self.referrals else None


def _median_days(histories: Sequence[ReferralHistory], stage: Stage) -> float | None:
    days = [
        (entered - h.referral.created_at).total_seconds() / _DAY_SECONDS
        for h in histories
        if (entered := h.first_entered(stage)) is not None
    ]
    return round(median(days), 2) if days else None


def loop_closure(histories: Iterable[ReferralHistory]) -> LoopClosure:
    """The figures over one cohort (see the module's definitions)."""
    cohort = [h for h in histories if h.referral.stage is not Stage.REDIRECTED]
    return LoopClosure(
        referrals=len(cohort),
        closed=sum(1 for h in cohort if h.first_entered(Stage.CLOSED) is not None),
        median_days_to_scheduled=_median_days(cohort, Stage.SCHEDULED),
        median_days_to_seen=_median_days(cohort, Stage.SEEN),
        median_days_to_report=_median_days(cohort, Stage.CLOSED),
    )


def loop_closure_by(
    histories: Iterable[ReferralHistory], key: Callable[[ReferralHistory], K]
) -> dict[K, LoopClosure]:
    """The figures per group (a location, a referring provider, a month, or a tuple)."""
    groups: dict[K, list[ReferralHistory]] = defaultdict(list)
    for history in histories:
        groups[key(history)].append(history)
    return {group: loop_closure(members) for group, members in groups.items()}
