"""The pure campaign rules: what a campaign may ask, its outreach keys and answer times,
and what follows a step whose answer time ran out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from careloop_caregaps.domain.campaign import (
    Next,
    Step,
    after_wait,
    outreach_key,
    problems,
    respond_by,
)

STEPS = (Step("sms", 3), Step(None, 5))
KNOWN = {"diabetes-hba1c", "influenza-vaccine"}


def test_a_well_formed_campaign_has_no_problems() -> None:
    assert problems("Spring", ["diabetes-hba1c"], STEPS, KNOWN) == []


def test_each_problem_is_named() -> None:
    assert problems(" ", [], (), KNOWN) == [
        "Give the campaign a name.",
        "Name at least one measure.",
        "Give at least one step.",
    ]
    assert problems("x", ["nope", "nope"], STEPS, KNOWN) == ["Unknown measure(s): nope."]
    assert problems("x", ["influenza-vaccine"], (Step("sms", 91),), KNOWN) == [
        "A step waits between 0 and 90 days."
    ]
    assert problems("x", ["influenza-vaccine"], (Step("sms", 1),) * 11, KNOWN) == [
        "A campaign has at most 10 steps."
    ]


def test_keys_and_answer_times() -> None:
    assert outreach_key("c1", "p1", 2) == "c1:p1:2"
    sent = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert respond_by(Step("sms", 3), sent) == sent + timedelta(days=3)


def test_after_a_step_the_next_goes_while_a_gap_waits() -> None:
    assert after_wait(1, STEPS, ["outreach-sent"]) == Next("next-step", 2, 1)
    assert after_wait(1, STEPS, ["open", "outreach-sent"]) == Next("next-step", 2, 2)


def test_after_the_last_step_the_coordinators_follow() -> None:
    assert after_wait(2, STEPS, ["outreach-sent", "declined"]) == Next("unanswered", None, 1)


def test_a_booking_or_evidence_is_an_answer() -> None:
    assert after_wait(1, STEPS, ["scheduled", "outreach-sent"]) == Next("scheduled")
    assert after_wait(2, STEPS, ["closed", "outreach-sent"]) == Next("closed")


def test_nothing_left_to_ask_stops() -> None:
    assert after_wait(1, STEPS, ["declined", "excluded"]) == Next("stopped")
    assert after_wait(1, STEPS, []) == Next("stopped")
