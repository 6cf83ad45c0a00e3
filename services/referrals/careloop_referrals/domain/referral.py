"""The referral lifecycle: one managed process until the referring provider has the outcome.

The stages follow the IHE 360X closed-loop referral profile, which exchanges them as a
FHIR R4 `Task` (focus: the `ServiceRequest`): the stage is the Task's `businessStatus`,
and `FHIR_TASK_STATUS` gives the coarser `Task.status` an EHR expects beside it.

    received -> triaged -> [authorization pending -> authorized | denied]
             -> patient contacted -> scheduled -> seen -> outcome reported (closed)

with declined, cancelled, expired and redirected as exits. A denied authorization may be
resubmitted; a scheduled visit the patient missed goes back to patient contacted. Every
step is kept as a `Transition` (who, when, why), and each one raises `version`, which the
store checks so that two concurrent steps on one referral cannot both win.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime
from enum import StrEnum


class Direction(StrEnum):
    INBOUND = "inbound"  # to one of our specialists
    OUTBOUND = "outbound"  # from one of our providers to an outside specialist


class Urgency(StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"
    STAT = "stat"


class Stage(StrEnum):
    RECEIVED = "received"
    TRIAGED = "triaged"
    AUTHORIZATION_PENDING = "authorization-pending"
    AUTHORIZED = "authorized"
    DENIED = "denied"
    PATIENT_CONTACTED = "patient-contacted"
    SCHEDULED = "scheduled"
    SEEN = "seen"
    CLOSED = "outcome-reported"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REDIRECTED = "redirected"


_EXITS = frozenset({Stage.DECLINED, Stage.CANCELLED, Stage.EXPIRED, Stage.REDIRECTED})
TERMINAL_STAGES = _EXITS | {Stage.CLOSED}

# Where a referral may go from each stage. Authorization is a detour, not a step: a
# referral that needs none goes from triaged straight to the patient, and one whose
# patient called in first may be scheduled before anyone reached out.
_NEXT: dict[Stage, frozenset[Stage]] = {
    Stage.RECEIVED: frozenset({Stage.TRIAGED}) | _EXITS,
    Stage.TRIAGED: frozenset(
        {Stage.AUTHORIZATION_PENDING, Stage.PATIENT_CONTACTED, Stage.SCHEDULED}
    )
    | _EXITS,
    Stage.AUTHORIZATION_PENDING: frozenset(
        {Stage.AUTHORIZED, Stage.DENIED, Stage.CANCELLED, Stage.EXPIRED}
    ),
    Stage.AUTHORIZED: frozenset(
        {Stage.PATIENT_CONTACTED, Stage.SCHEDULED, Stage.CANCELLED, Stage.EXPIRED}
    ),
    Stage.DENIED: frozenset({Stage.AUTHORIZATION_PENDING, Stage.CANCELLED, Stage.REDIRECTED}),
    Stage.PATIENT_CONTACTED: frozenset({Stage.SCHEDULED, Stage.CANCELLED, Stage.EXPIRED}),
    Stage.SCHEDULED: frozenset({Stage.SEEN, Stage.PATIENT_CONTACTED, Stage.CANCELLED}),
    Stage.SEEN: frozenset({Stage.CLOSED}),
    **{stage: frozenset() for stage in TERMINAL_STAGES},
}

FHIR_TASK_STATUS: dict[Stage, str] = {
    Stage.RECEIVED: "received",
    Stage.TRIAGED: "accepted",
    Stage.AUTHORIZATION_PENDING: "on-hold",
    Stage.AUTHORIZED: "ready",
    Stage.DENIED: "on-hold",
    Stage.PATIENT_CONTACTED: "in-progress",
    Stage.SCHEDULED: "in-progress",
    Stage.SEEN: "in-progress",
    Stage.CLOSED: "completed",
    Stage.DECLINED: "rejected",
    Stage.CANCELLED: "cancelled",
    Stage.EXPIRED: "failed",
    Stage.REDIRECTED: "cancelled",
}
"""`Task.status` for each stage; the stage itself travels as `Task.businessStatus`."""

# Steps whose reason is part of the record: a referral never leaves the loop, or waits
# on a payer's refusal, without someone saying why.
_REASON_REQUIRED = _EXITS | {Stage.DENIED}


def allowed_next(stage: Stage) -> frozenset[Stage]:
    """The stages a referral at `stage` may move to (none once it is terminal)."""
    return _NEXT[stage]


class InvalidTransition(Exception):
    """The referral's stage does not allow the requested step; `allowed` says what does."""

    def __init__(self, current: Stage, requested: Stage) -> None:
        self.current = current
        self.requested = requested
        self.allowed = allowed_next(current)
        names = ", ".join(sorted(self.allowed)) or "none: the referral is finished"
        super().__init__(
            f"A referral that is {current} cannot become {requested}; allowed next: {names}."
        )


class ReasonRequired(Exception):
    """A step out of the loop (or a denial) was asked for without a reason."""

    def __init__(self, requested: Stage) -> None:
        self.requested = requested
        super().__init__(f"Moving a referral to {requested} needs a reason.")


@dataclass(frozen=True)
class Transition:
    """One step of one referral, kept for ever: the loop's history and its clocks."""

    from_stage: Stage | None
    to_stage: Stage
    actor: str
    at: datetime
    reason: str | None = None


@dataclass(frozen=True)
class Referral:
    """The referral as a process. Clinical content (reason text, packet documents) lives
    apart, encrypted; this holds ids, codes and the loop's state only."""

    id: str
    org_id: str
    location_id: str
    patient_id: str
    direction: Direction
    urgency: Urgency
    referring_provider_id: str
    receiving_provider_id: str | None
    stage: Stage
    stage_entered_at: datetime
    created_at: datetime
    appointment_id: str | None = None
    version: int = 1

    @property
    def is_open(self) -> bool:
        return self.stage not in TERMINAL_STAGES


@dataclass(frozen=True)
class ReferralRequest:
    """What whoever refers says: who, to where, how urgent, from and to whom."""

    location_id: str
    patient_id: str
    direction: Direction
    urgency: Urgency
    referring_provider_id: str
    receiving_provider_id: str | None = None


def receive(
    request: ReferralRequest, *, id: str, org_id: str, actor: str, now: datetime
) -> tuple[Referral, Transition]:
    """A new referral, in `received`, with the transition that opened its history."""
    referral = Referral(
        **asdict(request),
        id=id,
        org_id=org_id,
        stage=Stage.RECEIVED,
        stage_entered_at=now,
        created_at=now,
    )
    return referral, Transition(None, Stage.RECEIVED, actor, now)


def advance(
    referral: Referral,
    to: Stage,
    *,
    actor: str,
    now: datetime,
    reason: str | None = None,
    appointment_id: str | None = None,
) -> tuple[Referral, Transition]:
    """Move the referral one step, or raise `InvalidTransition` / `ReasonRequired`.

    `appointment_id` links the visit when the step is `scheduled`; leaving `scheduled`
    for `patient contacted` (the visit was missed or cancelled) unlinks it.
    """
    if to not in _NEXT[referral.stage]:
        raise InvalidTransition(referral.stage, to)
    if to in _REASON_REQUIRED and not (reason and reason.strip()):
        raise ReasonRequired(to)
    linked = referral.appointment_id
    if to is Stage.SCHEDULED:
        linked = appointment_id or linked
    elif to is Stage.PATIENT_CONTACTED:
        linked = None
    moved = replace(
        referral,
        stage=to,
        stage_entered_at=now,
        appointment_id=linked,
        version=referral.version + 1,
    )
    return moved, Transition(referral.stage, to, actor, now, reason)


def relink(referral: Referral, appointment_id: str) -> Referral:
    """The referral following its visit to a new appointment (a reschedule): the stage
    stays `scheduled`, the version moves, so a step decided on the old link is refused."""
    if referral.stage is not Stage.SCHEDULED:
        raise InvalidTransition(referral.stage, Stage.SCHEDULED)
    return replace(referral, appointment_id=appointment_id, version=referral.version + 1)
