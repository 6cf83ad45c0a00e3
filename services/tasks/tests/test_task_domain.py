"""The pure rules of tasks: rule sets as data (validated, matched, one dedup key per
subject and stage), round-robin turns, the state machine, and titles that hold codes only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from careloop_tasks.domain.assignment import next_in_turn
from careloop_tasks.domain.rules import InvalidRules, parse_rules
from careloop_tasks.domain.task import (
    Outcome,
    Priority,
    Status,
    Task,
    TaskClosed,
    assign,
    cancel,
    claim,
    complete,
    escalate,
)
from careloop_tasks.domain.titles import UnsafeTitle, title_for
from careloop_tasks.usecases.rules import KNOWN_EVENTS, default_document

pytestmark = pytest.mark.unit

STALLED = "careloop.referrals.referral.stalled.v1"
ESCALATED = "careloop.referrals.referral.escalated.v1"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _stalled(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "referral_id": "ref-1",
        "patient_id": "pat-1",
        "org_id": "org-1",
        "location_id": "loc-north",
        "urgency": "urgent",
        "stage": "patient-contacted",
        "version": 4,
    }
    fields.update(overrides)
    return fields


def _task(**overrides: Any) -> Task:
    values: dict[str, Any] = {
        "id": "task-1",
        "org_id": "org-1",
        "location_id": "loc-north",
        "queue": "referral-coordinator@loc-north",
        "kind": "follow-up",
        "title": "Follow up with a patient",
        "priority": Priority.NORMAL,
        "status": Status.OPEN,
        "due_at": NOW + timedelta(hours=4),
        "patient_id": "pat-1",
        "subject_kind": None,
        "subject_id": None,
        "dedup_key": None,
        "rule_id": None,
        "assignee_id": None,
        "outcome": None,
        "escalated_at": None,
        "version": 1,
        "created_at": NOW,
        "updated_at": NOW,
    }
    values.update(overrides)
    return Task(**values)


def test_the_default_rules_load_and_make_one_key_per_referral_stage() -> None:
    rules = parse_rules(default_document(), known_events=KNOWN_EVENTS)
    [stall] = rules.for_event(STALLED, _stalled())
    assert (stall.kind, stall.queue_role, stall.priority) == (
        "referral-stalled",
        "referral-coordinator",
        Priority.HIGH,
    )
    assert stall.due_in.for_event(_stalled()) == timedelta(hours=4)
    assert stall.due_in.for_event(_stalled(urgency="routine")) == timedelta(hours=24)
    assert stall.due_in.for_event(_stalled(urgency="unheard-of")) == timedelta(hours=24)

    [escalation] = rules.for_event(ESCALATED, _stalled())
    assert rules.creator_of(escalation) is stall
    # The escalation finds the stall's task: same rule, subject, stage and version.
    assert stall.dedup_key(_stalled()) == rules.creator_of(escalation).dedup_key(_stalled())
    assert stall.dedup_key(_stalled()) != stall.dedup_key(_stalled(stage="scheduled", version=5))
    assert stall.dedup_key(_stalled()) != stall.dedup_key(_stalled(referral_id="ref-2"))
    assert rules.for_event("careloop.referrals.referral.received.v1", _stalled()) == []


def test_a_rule_matches_only_the_fields_it_names() -> None:
    document = {
        "rules": [
            {
                "id": "stat-stalls",
                "on": STALLED,
                "kind": "referral-stalled",
                "queue_role": "triage-nurse",
                "priority": "urgent",
                "match": {"urgency": ["stat", "urgent"], "direction": "inbound"},
            }
        ]
    }
    rules = parse_rules(document, known_events=KNOWN_EVENTS)
    assert rules.for_event(STALLED, _stalled(urgency="stat", direction="inbound"))
    assert not rules.for_event(STALLED, _stalled(urgency="routine", direction="inbound"))
    assert not rules.for_event(STALLED, _stalled(urgency="stat", direction="outbound"))


@pytest.mark.parametrize(
    ("rules", "complaint"),
    [
        (
            [
                {
                    "id": "x",
                    "on": "careloop.patients.patient.registered.v1",
                    "kind": "general",
                    "queue_role": "r",
                }
            ],
            "does not consume",
        ),
        (
            [{"id": "x", "on": STALLED, "kind": "free text title", "queue_role": "r"}],
            "no task kind",
        ),
        (
            [{"id": "x", "on": STALLED, "kind": "general", "queue_role": "r", "priority": "asap"}],
            "priority",
        ),
        (
            [{"id": "x", "on": STALLED, "kind": "general", "queue_role": "r", "due_in_hours": -1}],
            "hours",
        ),
        ([{"id": "x", "on": ESCALATED, "action": "escalate", "target": "missing"}], "target"),
        ([{"id": "x", "on": STALLED, "kind": "general", "queue_role": "r"}] * 2, "same id"),
        ([{"id": "x", "on": STALLED, "kind": "general"}], "queue_role"),
    ],
)
def test_a_rule_set_that_cannot_work_is_refused_with_the_reason(
    rules: list[dict[str, Any]], complaint: str
) -> None:
    with pytest.raises(InvalidRules, match=complaint):
        parse_rules({"rules": rules}, known_events=KNOWN_EVENTS)


def test_round_robin_takes_turns_in_a_stable_order() -> None:
    members = ["user-c", "user-a", "user-b"]
    turns: list[str] = []
    last = None
    for _ in range(4):
        last = next_in_turn(members, last)
        assert last is not None
        turns.append(last)
    assert turns == ["user-a", "user-b", "user-c", "user-a"]
    # A member who left: the turn goes to whoever came after them.
    assert next_in_turn(["user-a", "user-c"], "user-b") == "user-c"
    assert next_in_turn([], None) is None


def test_the_state_machine_moves_versions_and_closes_for_good() -> None:
    assigned = assign(_task(), "user-a", now=NOW)
    assert (assigned.status, assigned.assignee_id, assigned.version) == (Status.OPEN, "user-a", 2)
    claimed = claim(assigned, "user-b", now=NOW)
    assert (claimed.status, claimed.assignee_id, claimed.version) == (
        Status.IN_PROGRESS,
        "user-b",
        3,
    )
    done = complete(claimed, Outcome.RESOLVED, now=NOW)
    assert (done.status, done.outcome) == (Status.COMPLETED, Outcome.RESOLVED)
    changes: list[Callable[[], Task]] = [
        lambda: complete(done, Outcome.RESOLVED, now=NOW),
        lambda: cancel(done, now=NOW),
        lambda: claim(done, "user-a", now=NOW),
        lambda: cancel(cancel(_task(), now=NOW), now=NOW),
    ]
    for change in changes:
        with pytest.raises(TaskClosed):
            change()
    assert escalate(done, now=NOW) is None


def test_escalation_raises_to_urgent_once() -> None:
    raised = escalate(_task(priority=Priority.HIGH), now=NOW)
    assert raised is not None
    assert (raised.priority, raised.escalated_at, raised.version) == (Priority.URGENT, NOW, 2)
    assert escalate(raised, now=NOW) is None


def test_overdue_is_for_work_still_to_do() -> None:
    late = NOW + timedelta(hours=5)
    assert _task().overdue_at(late)
    assert not _task().overdue_at(NOW)
    assert not complete(_task(), Outcome.RESOLVED, now=NOW).overdue_at(late)


def test_titles_hold_codes_only() -> None:
    assert title_for("referral-stalled", {"stage": "patient-contacted"}) == (
        "Referral stalled at patient contacted"
    )
    for value in ("1234567", "jane.doe@example.org", "555-0100", "Jane Doe", None):
        with pytest.raises(UnsafeTitle):
            title_for("referral-stalled", {"stage": value})
    with pytest.raises(UnsafeTitle):
        title_for("Call Jane about her results", {})
