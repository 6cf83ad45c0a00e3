"""The referral lifecycle, NPI check digits, stage clocks and loop-closure figures, as
pure domain code (no I/O)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import product

import pytest

from careloop_referrals.domain.clocks import (
    DEFAULT_CLOCKS,
    StageClock,
    clock_for,
    deadlines,
)
from careloop_referrals.domain.loop_closure import (
    ReferralHistory,
    loop_closure,
    loop_closure_by,
)
from careloop_referrals.domain.npi import InvalidNpi, check_digit, validate_npi
from careloop_referrals.domain.referral import (
    FHIR_TASK_STATUS,
    TERMINAL_STAGES,
    Direction,
    InvalidTransition,
    ReasonRequired,
    Referral,
    ReferralRequest,
    Stage,
    Transition,
    Urgency,
    advance,
    allowed_next,
    receive,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

# The lifecycle as the issue and 360X state it, written out by hand so that a change to
# the table in domain/ has to be made twice, on purpose.
EXITS = {Stage.DECLINED, Stage.CANCELLED, Stage.EXPIRED, Stage.REDIRECTED}
EXPECTED_NEXT: dict[Stage, set[Stage]] = {
    Stage.RECEIVED: {Stage.TRIAGED} | EXITS,
    Stage.TRIAGED: {Stage.AUTHORIZATION_PENDING, Stage.PATIENT_CONTACTED, Stage.SCHEDULED} | EXITS,
    Stage.AUTHORIZATION_PENDING: {
        Stage.AUTHORIZED,
        Stage.DENIED,
        Stage.CANCELLED,
        Stage.EXPIRED,
    },
    Stage.AUTHORIZED: {Stage.PATIENT_CONTACTED, Stage.SCHEDULED, Stage.CANCELLED, Stage.EXPIRED},
    Stage.DENIED: {Stage.AUTHORIZATION_PENDING, Stage.CANCELLED, Stage.REDIRECTED},
    Stage.PATIENT_CONTACTED: {Stage.SCHEDULED, Stage.CANCELLED, Stage.EXPIRED},
    Stage.SCHEDULED: {Stage.SEEN, Stage.PATIENT_CONTACTED, Stage.CANCELLED},
    Stage.SEEN: {Stage.CLOSED},
    Stage.CLOSED: set(),
    Stage.DECLINED: set(),
    Stage.CANCELLED: set(),
    Stage.EXPIRED: set(),
    Stage.REDIRECTED: set(),
}


def referral_at(stage: Stage, *, urgency: Urgency = Urgency.ROUTINE) -> Referral:
    request = ReferralRequest("loc-1", "pat-1", Direction.INBOUND, urgency, "prov-ext-1", "prov-1")
    opened, _ = receive(request, id="ref-1", org_id="org-1", actor="user-1", now=T0)
    return replace(opened, stage=stage, version=4)


def test_every_stage_has_a_fhir_task_status_and_a_row_in_the_table() -> None:
    assert set(FHIR_TASK_STATUS) == set(Stage)
    assert set(EXPECTED_NEXT) == set(Stage)
    assert {s for s in Stage if not allowed_next(s)} == set(TERMINAL_STAGES)


@pytest.mark.parametrize(("current", "requested"), list(product(Stage, Stage)))
def test_each_step_from_each_stage_is_allowed_or_refused_with_the_allowed_next(
    current: Stage, requested: Stage
) -> None:
    referral = referral_at(current)
    if requested in EXPECTED_NEXT[current]:
        moved, step = advance(referral, requested, actor="user-2", now=T0, reason="because")
        assert moved.stage is requested
        assert moved.version == referral.version + 1
        assert moved.stage_entered_at == T0
        assert step == Transition(current, requested, "user-2", T0, "because")
    else:
        with pytest.raises(InvalidTransition) as refused:
            advance(referral, requested, actor="user-2", now=T0, reason="because")
        assert refused.value.allowed == frozenset(EXPECTED_NEXT[current])
        assert refused.value.current is current
        assert str(current) in str(refused.value)


@pytest.mark.parametrize("exit_stage", sorted(EXITS | {Stage.DENIED}))
def test_leaving_the_loop_or_a_denial_needs_a_reason(exit_stage: Stage) -> None:
    start = Stage.AUTHORIZATION_PENDING if exit_stage is Stage.DENIED else Stage.RECEIVED
    if exit_stage is Stage.REDIRECTED:
        start = Stage.TRIAGED
    for blank in (None, "", "   "):
        with pytest.raises(ReasonRequired):
            advance(referral_at(start), exit_stage, actor="u", now=T0, reason=blank)


def test_a_new_referral_opens_its_history_in_received() -> None:
    request = ReferralRequest("l", "p", Direction.OUTBOUND, Urgency.URGENT, "prov-1")
    referral, step = receive(request, id="r", org_id="o", actor="partner:acme", now=T0)
    assert (referral.stage, referral.version, referral.is_open) == (Stage.RECEIVED, 1, True)
    assert step == Transition(None, Stage.RECEIVED, "partner:acme", T0)


def test_scheduling_links_the_visit_and_a_missed_visit_unlinks_it() -> None:
    scheduled, _ = advance(
        referral_at(Stage.TRIAGED), Stage.SCHEDULED, actor="u", now=T0, appointment_id="apt-9"
    )
    assert scheduled.appointment_id == "apt-9"
    recontacted, _ = advance(scheduled, Stage.PATIENT_CONTACTED, actor="u", now=T0)
    assert recontacted.appointment_id is None


@pytest.mark.parametrize("npi", ["1234567893", "1245319599", "2000000002", " 1234567893 "])
def test_valid_npis_pass(npi: str) -> None:
    assert validate_npi(npi) == npi.strip()


@pytest.mark.parametrize(
    ("npi", "says"),
    [
        ("1234567890", "check digit"),
        ("1234567839", "check digit"),  # two digits swapped
        ("123456789", "ten digits"),
        ("12345678930", "ten digits"),
        ("12345a7893", "ten digits"),
        ("3234567893", "starts with 1"),
    ],
)
def test_invalid_npis_are_refused_with_the_rule_they_broke(npi: str, says: str) -> None:
    with pytest.raises(InvalidNpi, match=says):
        validate_npi(npi)


def test_check_digit_of_the_cms_example() -> None:
    assert check_digit("123456789") == 3


def test_the_most_specific_clock_wins_and_a_missing_one_inherits() -> None:
    org = {(Urgency.ROUTINE, Stage.RECEIVED): StageClock(timedelta(hours=24), timedelta(1))}
    location = {(Urgency.ROUTINE, Stage.TRIAGED): StageClock(timedelta(hours=6), timedelta(1))}
    assert (
        clock_for(Urgency.ROUTINE, Stage.RECEIVED, org, location)
        == org[(Urgency.ROUTINE, Stage.RECEIVED)]
    )
    assert (
        clock_for(Urgency.ROUTINE, Stage.TRIAGED, org, location)
        == location[(Urgency.ROUTINE, Stage.TRIAGED)]
    )
    assert (
        clock_for(Urgency.ROUTINE, Stage.SEEN, org, location)
        == (DEFAULT_CLOCKS[Urgency.ROUTINE][Stage.SEEN])
    )
    assert clock_for(Urgency.STAT, Stage.CLOSED) is None


def test_every_open_stage_has_a_clock_and_stat_runs_faster_than_routine() -> None:
    open_stages = set(Stage) - set(TERMINAL_STAGES)
    for urgency in Urgency:
        assert set(DEFAULT_CLOCKS[urgency]) == open_stages
    for stage in open_stages:
        stat, urgent, routine = (
            DEFAULT_CLOCKS[urgency][stage].stall_after
            for urgency in (Urgency.STAT, Urgency.URGENT, Urgency.ROUTINE)
        )
        assert stat < urgent < routine


def test_deadlines_run_from_when_the_stage_was_entered() -> None:
    referral = referral_at(Stage.RECEIVED, urgency=Urgency.URGENT)
    due = deadlines(referral)
    assert due is not None
    assert due.stalled_at == T0 + timedelta(hours=8)
    assert due.escalate_at == T0 + timedelta(hours=12)
    assert deadlines(referral_at(Stage.CLOSED)) is None


def _history(
    ref_id: str, location: str, steps: list[tuple[Stage, float]], *, final: Stage | None = None
) -> ReferralHistory:
    """A referral created at T0 whose history enters each stage `days` after T0."""
    base = referral_at(Stage.RECEIVED)
    transitions = [Transition(None, Stage.RECEIVED, "u", T0)]
    previous = Stage.RECEIVED
    for stage, days in steps:
        transitions.append(Transition(previous, stage, "u", T0 + timedelta(days=days)))
        previous = stage
    referral = replace(base, id=ref_id, location_id=location, stage=final or previous)
    return ReferralHistory(referral, transitions)


def test_loop_closure_figures_match_a_hand_computed_case() -> None:
    histories = [
        # closed: scheduled day 2, seen day 10, reported day 12
        _history(
            "a",
            "loc-1",
            [(Stage.TRIAGED, 1), (Stage.SCHEDULED, 2), (Stage.SEEN, 10), (Stage.CLOSED, 12)],
        ),
        # closed: scheduled day 4, seen day 20, reported day 21
        _history(
            "b",
            "loc-1",
            [(Stage.TRIAGED, 1), (Stage.SCHEDULED, 4), (Stage.SEEN, 20), (Stage.CLOSED, 21)],
        ),
        # missed visit and rebooked: first scheduled day 6 counts; seen day 30, no report
        _history(
            "c",
            "loc-1",
            [
                (Stage.TRIAGED, 2),
                (Stage.SCHEDULED, 6),
                (Stage.PATIENT_CONTACTED, 15),
                (Stage.SCHEDULED, 16),
                (Stage.SEEN, 30),
            ],
        ),
        # never scheduled: expired
        _history("d", "loc-2", [(Stage.TRIAGED, 1), (Stage.EXPIRED, 40)]),
        # redirected elsewhere: not in the cohort
        _history("e", "loc-2", [(Stage.TRIAGED, 1), (Stage.REDIRECTED, 2)]),
    ]
    overall = loop_closure(histories)
    assert overall.referrals == 4
    assert overall.closed == 2
    assert overall.share_closed == 0.5
    assert overall.median_days_to_scheduled == 4.0  # days 2, 4, 6
    assert overall.median_days_to_seen == 20.0  # days 10, 20, 30
    assert overall.median_days_to_report == 16.5  # days 12, 21

    by_location = loop_closure_by(histories, lambda h: h.referral.location_id)
    assert by_location["loc-1"].share_closed == pytest.approx(2 / 3)
    assert by_location["loc-2"].referrals == 1
    assert by_location["loc-2"].share_closed == 0.0
    assert by_location["loc-2"].median_days_to_scheduled is None
    assert loop_closure([]).share_closed is None
