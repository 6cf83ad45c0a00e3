"""The appointment lifecycle, following FHIR R4 `Appointment.status`.

proposed -> booked -> arrived -> fulfilled, with cancelled and noshow as exits.
Confirmation (has the patient said they will come?) is kept apart from the status:
FHIR has no status for it, and a confirmed visit is still simply `booked`.
A reschedule is a cancellation of the old appointment plus a new booking, linked both
ways by id, so every consumer sees two ordinary lifecycle steps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum


class AppointmentStatus(StrEnum):
    PROPOSED = "proposed"
    BOOKED = "booked"
    ARRIVED = "arrived"
    FULFILLED = "fulfilled"
    NOSHOW = "noshow"
    CANCELLED = "cancelled"


class Confirmation(StrEnum):
    UNCONFIRMED = "unconfirmed"
    CONFIRMED = "confirmed"


# Statuses that hold the provider's time: the database refuses two of them overlapping.
ACTIVE_STATUSES = frozenset(
    {AppointmentStatus.PROPOSED, AppointmentStatus.BOOKED, AppointmentStatus.ARRIVED}
)

_TRANSITIONS: dict[AppointmentStatus, frozenset[AppointmentStatus]] = {
    AppointmentStatus.PROPOSED: frozenset({AppointmentStatus.BOOKED, AppointmentStatus.CANCELLED}),
    AppointmentStatus.BOOKED: frozenset(
        {AppointmentStatus.ARRIVED, AppointmentStatus.NOSHOW, AppointmentStatus.CANCELLED}
    ),
    AppointmentStatus.ARRIVED: frozenset({AppointmentStatus.FULFILLED}),
    AppointmentStatus.FULFILLED: frozenset(),
    AppointmentStatus.NOSHOW: frozenset(),
    AppointmentStatus.CANCELLED: frozenset(),
}

# A no-show can only be declared once the visit should have started; checking in
# opens this long before the start (patients arrive early).
CHECK_IN_OPENS = timedelta(hours=2)


class InvalidTransition(Exception):
    """The appointment's current state does not allow the requested step."""


@dataclass(frozen=True)
class Appointment:
    id: str
    org_id: str
    patient_id: str
    provider_id: str
    location_id: str
    appointment_type_id: str
    start_at: datetime
    end_at: datetime
    status: AppointmentStatus
    confirmation: Confirmation = Confirmation.UNCONFIRMED
    rescheduled_from_id: str | None = None
    rescheduled_to_id: str | None = None
    cancel_reason: str | None = None
    version: int = 1


def _move(appt: Appointment, to: AppointmentStatus) -> Appointment:
    if to not in _TRANSITIONS[appt.status]:
        raise InvalidTransition(f"An appointment that is {appt.status} cannot become {to}.")
    return replace(appt, status=to, version=appt.version + 1)


def cancel(appt: Appointment, *, reason: str | None = None) -> Appointment:
    """Cancel a proposed or booked appointment (frees the provider's time)."""
    return replace(_move(appt, AppointmentStatus.CANCELLED), cancel_reason=reason)


def confirm(appt: Appointment) -> Appointment:
    """Record the patient's confirmation; only a visit still ahead can be confirmed."""
    if appt.status not in (AppointmentStatus.PROPOSED, AppointmentStatus.BOOKED):
        raise InvalidTransition(f"An appointment that is {appt.status} cannot be confirmed.")
    if appt.confirmation is Confirmation.CONFIRMED:
        raise InvalidTransition("The appointment is already confirmed.")
    return replace(appt, confirmation=Confirmation.CONFIRMED, version=appt.version + 1)


def check_in(appt: Appointment, *, now: datetime) -> Appointment:
    """The patient arrived (FHIR `arrived`); not earlier than `CHECK_IN_OPENS` ahead."""
    if appt.status is AppointmentStatus.BOOKED and now < appt.start_at - CHECK_IN_OPENS:
        raise InvalidTransition("Check-in opens two hours before the visit.")
    return _move(appt, AppointmentStatus.ARRIVED)


def no_show(appt: Appointment, *, now: datetime) -> Appointment:
    """The patient did not come; only once the visit should have started."""
    if appt.status is AppointmentStatus.BOOKED and now < appt.start_at:
        raise InvalidTransition("A visit cannot be a no-show before it starts.")
    return _move(appt, AppointmentStatus.NOSHOW)


def fulfil(appt: Appointment) -> Appointment:
    """The visit took place."""
    return _move(appt, AppointmentStatus.FULFILLED)


def reschedule(
    old: Appointment,
    *,
    new_id: str,
    start_at: datetime,
    end_at: datetime,
    provider_id: str | None = None,
) -> tuple[Appointment, Appointment]:
    """Cancel `old` and book its replacement, linked both ways; the replacement keeps
    the patient, location, type and confirmation is asked again."""
    cancelled = replace(cancel(old, reason="rescheduled"), rescheduled_to_id=new_id)
    new = Appointment(
        id=new_id,
        org_id=old.org_id,
        patient_id=old.patient_id,
        provider_id=provider_id or old.provider_id,
        location_id=old.location_id,
        appointment_type_id=old.appointment_type_id,
        start_at=start_at,
        end_at=end_at,
        status=AppointmentStatus.BOOKED,
        rescheduled_from_id=old.id,
    )
    return cancelled, new
