"""Prior authorization rules: which answers a referral takes in which stage, where it
moves, visits left and the reminder time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from careloop_referrals.domain.authorization import (
    AuthorizationDecision,
    AuthorizationRefused,
    AuthorizationStatus,
    count_visit,
    record,
)
from careloop_referrals.domain.referral import Direction, Referral, Stage, Urgency

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
REQUESTED, APPROVED, DENIED = (
    AuthorizationStatus.REQUESTED,
    AuthorizationStatus.APPROVED,
    AuthorizationStatus.DENIED,
)


def _referral(stage: Stage) -> Referral:
    return Referral(
        id="ref-1",
        org_id="org-1",
        location_id="loc-1",
        patient_id="pat-1",
        direction=Direction.INBOUND,
        urgency=Urgency.ROUTINE,
        referring_provider_id="dir-1",
        receiving_provider_id=None,
        stage=stage,
        stage_entered_at=NOW,
        created_at=NOW,
    )


def _decision(status: AuthorizationStatus, **more: object) -> AuthorizationDecision:
    return AuthorizationDecision(payer="Synthetic Health Plan", status=status, **more)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("stage", "status", "moves_to"),
    [
        (Stage.TRIAGED, REQUESTED, Stage.AUTHORIZATION_PENDING),
        (Stage.DENIED, REQUESTED, Stage.AUTHORIZATION_PENDING),
        (Stage.AUTHORIZATION_PENDING, APPROVED, Stage.AUTHORIZED),
        (Stage.AUTHORIZATION_PENDING, DENIED, Stage.DENIED),
        (Stage.AUTHORIZATION_PENDING, REQUESTED, None),
        (Stage.AUTHORIZED, APPROVED, None),  # an extension while authorized
        (Stage.SCHEDULED, REQUESTED, None),
        (Stage.SCHEDULED, APPROVED, None),
        (Stage.RECEIVED, REQUESTED, None),
    ],
)
def test_the_answer_moves_a_referral_only_when_it_waits_on_it(
    stage: Stage, status: AuthorizationStatus, moves_to: Stage | None
) -> None:
    authorization, move = record(_referral(stage), None, _decision(status), actor="user-1", now=NOW)
    assert move is moves_to
    assert authorization.status is status
    assert authorization.version == 1
    assert authorization.visits_used == 0


@pytest.mark.parametrize("stage", [Stage.RECEIVED, Stage.TRIAGED])
@pytest.mark.parametrize("status", [APPROVED, DENIED])
def test_an_answer_before_the_request_is_refused(stage: Stage, status: AuthorizationStatus) -> None:
    with pytest.raises(AuthorizationRefused, match="requested"):
        record(_referral(stage), None, _decision(status), actor="user-1", now=NOW)


@pytest.mark.parametrize(
    "stage", [Stage.CLOSED, Stage.CANCELLED, Stage.DECLINED, Stage.EXPIRED, Stage.REDIRECTED]
)
def test_a_finished_referral_takes_no_authorization(stage: Stage) -> None:
    with pytest.raises(AuthorizationRefused, match="finished"):
        record(_referral(stage), None, _decision(REQUESTED), actor="user-1", now=NOW)


def test_visits_are_given_with_an_approval_and_the_expiry_is_in_the_future() -> None:
    pending = _referral(Stage.AUTHORIZATION_PENDING)
    with pytest.raises(AuthorizationRefused, match="Approved visits"):
        record(pending, None, _decision(DENIED, approved_visits=3), actor="u", now=NOW)
    with pytest.raises(AuthorizationRefused, match="future"):
        record(pending, None, _decision(APPROVED, expires_at=NOW), actor="u", now=NOW)


def test_a_second_answer_keeps_the_visits_used_and_raises_the_version() -> None:
    pending = _referral(Stage.AUTHORIZATION_PENDING)
    first, _ = record(pending, None, _decision(APPROVED, approved_visits=2), actor="u", now=NOW)
    used = count_visit(first, now=NOW + timedelta(days=1))
    assert (used.visits_used, used.visits_left, used.used_up, used.version) == (1, 1, False, 2)
    renewed, move = record(
        _referral(Stage.SEEN),
        used,
        _decision(APPROVED, approved_visits=2, expires_at=NOW + timedelta(days=90)),
        actor="u2",
        now=NOW + timedelta(days=2),
    )
    assert move is None
    assert (renewed.visits_used, renewed.version, renewed.updated_by) == (1, 3, "u2")
    done = count_visit(renewed, now=NOW + timedelta(days=3))
    assert (done.visits_left, done.used_up) == (0, True)


def test_the_reminder_is_the_expiry_less_the_lead_for_approvals_only() -> None:
    expires = NOW + timedelta(days=30)
    pending = _referral(Stage.AUTHORIZATION_PENDING)
    approved, _ = record(pending, None, _decision(APPROVED, expires_at=expires), actor="u", now=NOW)
    assert approved.reminder_at(timedelta(days=14)) == expires - timedelta(days=14)
    assert approved.visits_left is None
    assert not approved.used_up
    requested, _ = record(pending, None, _decision(REQUESTED), actor="u", now=NOW)
    assert requested.reminder_at(timedelta(days=14)) is None
