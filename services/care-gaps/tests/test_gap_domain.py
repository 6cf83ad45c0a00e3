"""The gap lifecycle, transition by transition: what each finding, visit and hand
decision does to the current gap, and that the same finding twice changes nothing."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

import pytest
from careloop_caregaps.domain.findings import Finding, Outcome
from careloop_caregaps.domain.gap import (
    Attribution,
    Change,
    Gap,
    GapNotChangeable,
    GapStatus,
    apply_finding,
    booked,
    decline,
    exclude,
    outreach_sent,
    reopen,
    visit_cancelled,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HERE = Attribution("loc-north", "prov-1")


def _finding(outcome: Outcome, *, evidence: tuple[str, ...] = (), reason: str = "r") -> Finding:
    return Finding("diabetes-hba1c", "1", outcome, date(2026, 1, 1), evidence, reason)


def _apply(
    current: Gap | None, outcome: Outcome, *, evidence: tuple[str, ...] = (), reason: str = "r"
) -> Change | None:
    return apply_finding(
        current,
        _finding(outcome, evidence=evidence, reason=reason),
        gap_id="gap-2",
        org_id="org-1",
        patient_id="pat-1",
        attribution=HERE,
        now=NOW,
    )


def _gap(
    status: GapStatus = "open", *, by_hand: bool = False, appointment: str | None = None
) -> Gap:
    change = _apply(None, "gap", reason="no-hba1c-in-12-months")
    assert change is not None
    return replace(
        change.gap, id="gap-1", status=status, by_hand=by_hand, appointment_id=appointment
    )


def test_a_gap_finding_with_no_gap_opens_one_attributed_to_the_care_relationship() -> None:
    change = _apply(None, "gap", evidence=("fact-high",), reason="hba1c-over-9")
    assert change is not None
    assert change.opened
    gap = change.gap
    assert (gap.id, gap.status, gap.version, gap.opened_by) == ("gap-2", "open", 1, ("fact-high",))
    assert (gap.location_id, gap.provider_id, gap.reason) == ("loc-north", "prov-1", "hba1c-over-9")


@pytest.mark.parametrize("status", ["open", "outreach-sent", "scheduled"])
def test_the_same_gap_finding_again_changes_nothing(status: GapStatus) -> None:
    assert _apply(_gap(status), "gap", reason="no-hba1c-in-12-months") is None


def test_a_gap_finding_with_a_new_reason_refreshes_the_gap_without_a_status_change() -> None:
    change = _apply(_gap("scheduled"), "gap", reason="hba1c-over-9", evidence=("fact-9",))
    assert change is not None
    assert (change.previous, change.gap.status, change.cause) == ("scheduled", "scheduled", None)
    assert not change.status_changed
    assert change.gap.version == 2


@pytest.mark.parametrize("status", ["open", "outreach-sent", "scheduled", "declined"])
def test_evidence_closes_an_active_or_declined_gap_and_keeps_what_closed_it(
    status: GapStatus,
) -> None:
    change = _apply(_gap(status, by_hand=status == "declined"), "met", evidence=("fact-a1c",))
    assert change is not None
    assert (change.previous, change.gap.status, change.cause) == (status, "closed", "evidence")
    assert change.gap.closed_by == ("fact-a1c",)
    assert not change.gap.by_hand


@pytest.mark.parametrize("outcome", ["met", "excluded", "not-applicable"])
def test_without_a_gap_only_a_gap_finding_makes_one(outcome: Outcome) -> None:
    assert _apply(None, outcome) is None


def test_an_exclusion_excludes_an_active_gap() -> None:
    change = _apply(_gap("outreach-sent"), "excluded", evidence=("fact-hospice",))
    assert change is not None
    assert (change.gap.status, change.cause, change.gap.closed_by) == (
        "excluded",
        "exclusion",
        ("fact-hospice",),
    )


def test_leaving_the_population_makes_an_active_gap_not_applicable() -> None:
    change = _apply(_gap("scheduled"), "not-applicable")
    assert change is not None
    assert (change.gap.status, change.cause) == ("not-applicable", "left-population")


@pytest.mark.parametrize("status", ["closed", "not-applicable"])
def test_falling_due_after_a_finished_gap_starts_a_new_gap(status: GapStatus) -> None:
    change = _apply(_gap(status), "gap")
    assert change is not None
    assert change.opened
    assert change.gap.id == "gap-2"


def test_an_evaluated_exclusion_that_no_longer_holds_starts_a_new_gap() -> None:
    change = _apply(_gap("excluded"), "gap")
    assert change is not None
    assert change.opened


@pytest.mark.parametrize("status", ["declined", "excluded"])
def test_an_evaluation_leaves_a_decision_taken_by_hand_alone(status: GapStatus) -> None:
    assert _apply(_gap(status, by_hand=True), "gap") is None
    assert _apply(_gap(status, by_hand=True), "not-applicable") is None


@pytest.mark.parametrize("status", ["closed", "excluded", "not-applicable"])
def test_met_changes_nothing_once_the_gap_is_finished(status: GapStatus) -> None:
    assert _apply(_gap(status), "met") is None


@pytest.mark.parametrize("status", ["open", "outreach-sent"])
def test_a_booked_visit_schedules_an_open_gap(status: GapStatus) -> None:
    change = booked(_gap(status), "appt-1", NOW)
    assert change is not None
    assert (change.gap.status, change.cause, change.gap.appointment_id) == (
        "scheduled",
        "booked",
        "appt-1",
    )
    assert booked(change.gap, "appt-1", NOW) is None


@pytest.mark.parametrize("status", ["closed", "declined", "excluded", "not-applicable"])
def test_a_booked_visit_leaves_other_statuses_alone(status: GapStatus) -> None:
    assert booked(_gap(status), "appt-1", NOW) is None


def test_cancelling_the_visit_that_scheduled_the_gap_opens_it_again() -> None:
    scheduled = _gap("scheduled", appointment="appt-1")
    assert visit_cancelled(scheduled, "appt-other", NOW) is None
    change = visit_cancelled(scheduled, "appt-1", NOW)
    assert change is not None
    assert (change.gap.status, change.cause, change.gap.appointment_id) == (
        "open",
        "visit-cancelled",
        None,
    )
    assert visit_cancelled(change.gap, "appt-1", NOW) is None


def test_outreach_moves_an_open_gap_only() -> None:
    change = outreach_sent(_gap("open"), NOW)
    assert change is not None
    assert (change.gap.status, change.cause) == ("outreach-sent", "outreach")
    assert outreach_sent(_gap("scheduled"), NOW) is None


@pytest.mark.parametrize("status", ["open", "outreach-sent", "scheduled"])
def test_declining_an_active_gap_is_a_decision_by_hand(status: GapStatus) -> None:
    change = decline(_gap(status), NOW)
    assert (change.gap.status, change.cause, change.gap.by_hand) == ("declined", "declined", True)


@pytest.mark.parametrize("status", ["closed", "declined", "excluded", "not-applicable"])
def test_only_an_active_gap_is_declined(status: GapStatus) -> None:
    with pytest.raises(GapNotChangeable):
        decline(_gap(status), NOW)


def test_excluding_by_hand_from_active_or_declined() -> None:
    statuses: tuple[GapStatus, ...] = ("open", "declined")
    for status in statuses:
        change = exclude(_gap(status), NOW)
        assert (change.gap.status, change.gap.by_hand) == ("excluded", True)
    with pytest.raises(GapNotChangeable):
        exclude(_gap("closed"), NOW)


@pytest.mark.parametrize("status", ["declined", "excluded"])
def test_reopen_undoes_a_decline_or_exclusion(status: GapStatus) -> None:
    change = reopen(_gap(status, by_hand=True), NOW)
    assert (change.previous, change.gap.status, change.cause) == (status, "open", "reopened")
    assert not change.gap.by_hand
    assert change.gap.version == 2


@pytest.mark.parametrize("status", ["open", "scheduled", "closed", "not-applicable"])
def test_reopen_refuses_what_is_not_declined_or_excluded(status: GapStatus) -> None:
    with pytest.raises(GapNotChangeable):
        reopen(_gap(status), NOW)
