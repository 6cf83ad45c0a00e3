"""Outreach campaigns: what a campaign asks, and what happens to one patient's outreach
when a step's answer time runs out.

A campaign reaches every patient with an open gap of its measures at its location, one
step of its channel sequence at a time. A step waits `wait_days` for an answer; a
booking (a gap scheduled) or evidence (a gap closed) is the answer and ends the chain.
Without one, the next step goes; after the last, the care coordinators take over. The
contact budget and opt-outs are messaging's: a campaign only asks.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from careloop_caregaps.domain.gap import GapStatus

Channel = Literal["sms", "email", "portal"]
CampaignStatus = Literal["draft", "launched", "stopped"]
OutreachStatus = Literal["waiting", "scheduled", "closed", "unanswered", "stopped"]
"""waiting: a step went, its answer time runs; scheduled / closed: the patient answered
(a booking, evidence); unanswered: the last step went unanswered; stopped: the
campaign was stopped, or the gaps left the lifecycle some other way (declined, ...)."""

MAX_STEPS = 10
MAX_WAIT_DAYS = 90
PENDING: frozenset[GapStatus] = frozenset({"open", "outreach-sent"})
"""A gap in one of these still waits for the patient's answer."""
ANSWERED: frozenset[GapStatus] = frozenset({"scheduled", "closed"})


@dataclass(frozen=True, slots=True)
class Step:
    channel: Channel | None
    """None: the patient's preferred channel (messaging decides)."""
    wait_days: int


@dataclass(frozen=True, slots=True)
class Campaign:
    id: str
    org_id: str
    name: str
    location_id: str
    measure_ids: tuple[str, ...]
    steps: tuple[Step, ...]
    status: CampaignStatus
    created_by: str
    created_at: datetime
    launched_at: datetime | None
    launched_by: str | None
    stopped_at: datetime | None


def problems(
    name: str, measure_ids: Sequence[str], steps: Sequence[Step], known: Collection[str]
) -> list[str]:
    """What is wrong with a campaign as asked; [] when nothing."""
    found = []
    if not name.strip():
        found.append("Give the campaign a name.")
    if not measure_ids:
        found.append("Name at least one measure.")
    unknown = [m for m in measure_ids if m not in known]
    if unknown:
        found.append(f"Unknown measure(s): {', '.join(sorted(set(unknown)))}.")
    if not steps:
        found.append("Give at least one step.")
    if len(steps) > MAX_STEPS:
        found.append(f"A campaign has at most {MAX_STEPS} steps.")
    if any(not 0 <= s.wait_days <= MAX_WAIT_DAYS for s in steps):
        found.append(f"A step waits between 0 and {MAX_WAIT_DAYS} days.")
    return found


def outreach_key(campaign_id: str, patient_id: str, step: int) -> str:
    """Messaging sends one message per key: a redelivered request sends nothing more."""
    return f"{campaign_id}:{patient_id}:{step}"


def respond_by(step: Step, sent_at: datetime) -> datetime:
    return sent_at + timedelta(days=step.wait_days)


@dataclass(frozen=True, slots=True)
class Next:
    """What follows a step whose answer time ran out."""

    outcome: Literal["next-step", "unanswered", "scheduled", "closed", "stopped"]
    step: int | None = None
    """The step to request (`next-step`)."""
    open_gaps: int = 0
    """Gaps still waiting for the patient (`next-step`, `unanswered`)."""


def after_wait(step: int, steps: Sequence[Step], statuses: Iterable[GapStatus]) -> Next:
    """The patient's gaps of the campaign's measures when step `step`'s time ran out:
    any booked or closed is an answer; none pending means nothing is left to ask."""
    seen = list(statuses)
    if "scheduled" in seen:
        return Next("scheduled")
    if "closed" in seen:
        return Next("closed")
    pending = sum(1 for s in seen if s in PENDING)
    if pending == 0:
        return Next("stopped")
    if step < len(steps):
        return Next("next-step", step + 1, pending)
    return Next("unanswered", None, pending)
