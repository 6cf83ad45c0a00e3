"""A gap's lifecycle: what a Finding, a visit or a hand decision does to the current gap.

Every step returns a `Change` (the gap after it, the status before, the cause the event
names) or None when nothing changes. None is what makes re-evaluation idempotent: the
same facts give the same findings, and the same finding applied again changes nothing,
so no row is written and no event leaves.

A gap runs one care cycle. Once it is closed, not applicable or excluded by the
evaluation, the patient falling due again starts a new gap (a new id, `GapOpened`), so
the closed one keeps the evidence that closed it. Declined and excluded by hand are
decisions staff took: an evaluation never undoes them (only evidence closes a declined
gap, since the patient had the test after all), `reopen` does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any, Literal

from careloop_caregaps.domain.findings import Finding

GapStatus = Literal[
    "open", "outreach-sent", "scheduled", "closed", "excluded", "declined", "not-applicable"
]
Cause = Literal[
    "outreach",
    "booked",
    "visit-cancelled",
    "evidence",
    "exclusion",
    "declined",
    "left-population",
    "reopened",
]

ACTIVE: frozenset[GapStatus] = frozenset({"open", "outreach-sent", "scheduled"})
"""Statuses in which the patient still needs the care the measure asks for."""
FINISHED: frozenset[GapStatus] = frozenset({"closed", "not-applicable"})


class GapNotChangeable(Exception):
    """The asked change does not apply to the gap in its current status."""

    def __init__(self, message: str, status: GapStatus) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Gap:
    id: str
    org_id: str
    patient_id: str
    measure_id: str
    measure_version: str
    status: GapStatus
    due_on: date | None
    reason: str
    location_id: str | None
    provider_id: str | None
    opened_by: tuple[str, ...]
    """Fact ids behind the opening finding (an out-of-range result), often ()."""
    closed_by: tuple[str, ...]
    """Fact ids that closed or excluded it; () while it is active."""
    by_hand: bool
    """The status was set by staff (declined, excluded): evaluations leave it alone."""
    appointment_id: str | None
    """The booked visit that made it `scheduled` (only that visit's cancellation undoes it)."""
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    @property
    def is_current_cycle(self) -> bool:
        """Whether a later `gap` finding belongs to this gap rather than a new one."""
        if self.status in FINISHED:
            return False
        return not (self.status == "excluded" and not self.by_hand)


@dataclass(frozen=True, slots=True)
class Change:
    gap: Gap
    previous: GapStatus | None
    """None: the gap is new (`GapOpened`)."""
    cause: Cause | None
    """None with a `previous`: the gap's details changed (due date, reason), not its
    status, so the row changes and no event leaves."""

    @property
    def opened(self) -> bool:
        return self.previous is None

    @property
    def status_changed(self) -> bool:
        return self.previous is not None and self.previous != self.gap.status


@dataclass(frozen=True, slots=True)
class Attribution:
    location_id: str | None
    provider_id: str | None


def _moved(gap: Gap, status: GapStatus, cause: Cause, now: datetime, **fields: Any) -> Change:
    changed = replace(
        gap,
        status=status,
        version=gap.version + 1,
        updated_at=now,
        **fields,
    )
    return Change(changed, gap.status, cause)


def _new_gap(
    finding: Finding,
    *,
    gap_id: str,
    org_id: str,
    patient_id: str,
    attribution: Attribution,
    now: datetime,
) -> Change:
    gap = Gap(
        id=gap_id,
        org_id=org_id,
        patient_id=patient_id,
        measure_id=finding.measure_id,
        measure_version=finding.measure_version,
        status="open",
        due_on=finding.due_on,
        reason=finding.reason,
        location_id=attribution.location_id,
        provider_id=attribution.provider_id,
        opened_by=finding.evidence,
        closed_by=(),
        by_hand=False,
        appointment_id=None,
        version=1,
        created_at=now,
        updated_at=now,
    )
    return Change(gap, None, None)


def apply_finding(
    current: Gap | None,
    finding: Finding,
    *,
    gap_id: str,
    org_id: str,
    patient_id: str,
    attribution: Attribution,
    now: datetime,
) -> Change | None:
    """What `finding` does to the measure's current gap (`gap_id` names a gap it opens)."""
    outcome = finding.outcome
    if outcome == "gap":
        if current is None or not current.is_current_cycle:
            return _new_gap(
                finding,
                gap_id=gap_id,
                org_id=org_id,
                patient_id=patient_id,
                attribution=attribution,
                now=now,
            )
        if not current.is_active:
            return None  # declined or excluded by hand: staff decided, evidence did not come
        details = (finding.measure_version, finding.due_on, finding.reason, finding.evidence)
        if details == (current.measure_version, current.due_on, current.reason, current.opened_by):
            return None
        refreshed = replace(
            current,
            measure_version=finding.measure_version,
            due_on=finding.due_on,
            reason=finding.reason,
            opened_by=finding.evidence,
            version=current.version + 1,
            updated_at=now,
        )
        return Change(refreshed, current.status, None)
    if current is None:
        return None  # nothing to close: a met, excluded or out-of-population patient
    if outcome == "met":
        if current.is_active or current.status == "declined":
            return _moved(
                current,
                "closed",
                "evidence",
                now,
                closed_by=finding.evidence,
                due_on=finding.due_on,
                reason=finding.reason,
                by_hand=False,
            )
        return None
    if outcome == "excluded":
        if current.is_active:
            return _moved(
                current,
                "excluded",
                "exclusion",
                now,
                closed_by=finding.evidence,
                reason=finding.reason,
            )
        return None
    # not-applicable: the patient left the measure's population (aged out, ...)
    if current.is_active:
        return _moved(current, "not-applicable", "left-population", now, reason=finding.reason)
    return None


def booked(gap: Gap, appointment_id: str, now: datetime) -> Change | None:
    """A visit of one of the measure's types was booked: an open gap is scheduled."""
    if gap.status in ("open", "outreach-sent"):
        return _moved(gap, "scheduled", "booked", now, appointment_id=appointment_id)
    return None


def visit_cancelled(gap: Gap, appointment_id: str, now: datetime) -> Change | None:
    """The visit that scheduled the gap was cancelled or missed: it is open again."""
    if gap.status == "scheduled" and gap.appointment_id == appointment_id:
        return _moved(gap, "open", "visit-cancelled", now, appointment_id=None)
    return None


def outreach_sent(gap: Gap, now: datetime) -> Change | None:
    """The patient was contacted about an open gap."""
    if gap.status == "open":
        return _moved(gap, "outreach-sent", "outreach", now)
    return None


def decline(gap: Gap, now: datetime) -> Change:
    """The patient said no to the care the gap asks for."""
    if not gap.is_active:
        raise GapNotChangeable(f"A {gap.status} gap cannot be declined.", gap.status)
    return _moved(gap, "declined", "declined", now, by_hand=True, appointment_id=None)


def exclude(gap: Gap, now: datetime) -> Change:
    """Staff exclude the patient from the measure (a reason the data does not show)."""
    if not (gap.is_active or gap.status == "declined"):
        raise GapNotChangeable(f"A {gap.status} gap cannot be excluded.", gap.status)
    return _moved(gap, "excluded", "exclusion", now, by_hand=True, appointment_id=None)


def reopen(gap: Gap, now: datetime) -> Change:
    """Undo a decline or an exclusion: the gap is open again."""
    if gap.status not in ("declined", "excluded"):
        raise GapNotChangeable(f"A {gap.status} gap cannot be reopened.", gap.status)
    return _moved(gap, "open", "reopened", now, by_hand=False, closed_by=(), appointment_id=None)
