"""The appointment state machine follows FHIR Appointment.status."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from careloop_scheduling.domain import appointment as lifecycle
from careloop_scheduling.domain.appointment import (
    ACTIVE_STATUSES,
    Appointment,
    AppointmentStatus,
    Confirmation,
    InvalidTransition,
)

pytestmark = pytest.mark.unit

START = datetime(2030, 5, 6, 14, 0, tzinfo=UTC)


def booked(**changes: object) -> Appointment:
    appt = Appointment(
        id="appt-1",
        org_id="org-1",
        patient_id="pat-1",
        provider_id="dr-a",
        location_id="loc-1",
        appointment_type_id="type-1",
        start_at=START,
        end_at=START + timedelta(minutes=30),
        status=AppointmentStatus.BOOKED,
    )
    return replace(appt, **changes)


def test_booked_then_arrived_then_fulfilled() -> None:
    arrived = lifecycle.check_in(booked(), now=START - timedelta(minutes=10))
    done = lifecycle.fulfil(arrived)

    assert (arrived.status, done.status) == (AppointmentStatus.ARRIVED, AppointmentStatus.FULFILLED)
    assert done.version == 3


def test_cancel_keeps_the_reason_and_frees_the_time() -> None:
    cancelled = lifecycle.cancel(booked(), reason="patient asked")

    assert cancelled.status is AppointmentStatus.CANCELLED
    assert cancelled.cancel_reason == "patient asked"
    assert cancelled.status not in ACTIVE_STATUSES


@pytest.mark.parametrize(
    "status", [AppointmentStatus.CANCELLED, AppointmentStatus.NOSHOW, AppointmentStatus.FULFILLED]
)
def test_finished_appointments_cannot_move(status: AppointmentStatus) -> None:
    done = booked(status=status)
    late = START + timedelta(hours=1)
    for step in (
        lifecycle.cancel,
        lifecycle.confirm,
        lambda a: lifecycle.check_in(a, now=late),
        lambda a: lifecycle.no_show(a, now=late),
    ):
        with pytest.raises(InvalidTransition):
            step(done)


def test_no_show_only_once_the_visit_should_have_started() -> None:
    with pytest.raises(InvalidTransition, match="before it starts"):
        lifecycle.no_show(booked(), now=START - timedelta(minutes=1))
    assert lifecycle.no_show(booked(), now=START).status is AppointmentStatus.NOSHOW


def test_check_in_opens_two_hours_ahead_and_an_arrived_patient_is_no_no_show() -> None:
    with pytest.raises(InvalidTransition, match="two hours"):
        lifecycle.check_in(booked(), now=START - timedelta(hours=3))
    arrived = lifecycle.check_in(booked(), now=START - timedelta(hours=1))
    with pytest.raises(InvalidTransition):
        lifecycle.no_show(arrived, now=START + timedelta(hours=1))


def test_confirmation_is_separate_from_status_and_happens_once() -> None:
    confirmed = lifecycle.confirm(booked())

    assert confirmed.status is AppointmentStatus.BOOKED
    assert confirmed.confirmation is Confirmation.CONFIRMED
    with pytest.raises(InvalidTransition, match="already"):
        lifecycle.confirm(confirmed)


def test_reschedule_cancels_the_old_and_books_a_linked_new_one() -> None:
    later = START + timedelta(days=1)
    old = lifecycle.confirm(booked())

    cancelled, new = lifecycle.reschedule(
        old, new_id="appt-2", start_at=later, end_at=later + timedelta(minutes=30)
    )

    assert cancelled.status is AppointmentStatus.CANCELLED
    assert cancelled.rescheduled_to_id == "appt-2"
    assert new.rescheduled_from_id == "appt-1"
    assert new.status is AppointmentStatus.BOOKED
    assert new.confirmation is Confirmation.UNCONFIRMED
    assert (new.patient_id, new.provider_id, new.location_id) == ("pat-1", "dr-a", "loc-1")
    with pytest.raises(InvalidTransition):
        lifecycle.reschedule(cancelled, new_id="x", start_at=later, end_at=later)
