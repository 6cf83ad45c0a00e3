"""Events of the scheduling service (topic ``careloop.scheduling``, keyed by patient id).

Every appointment event carries the same snapshot of ids, times and status, never a
name or a reason for the visit: consumers (reminders, messaging, analytics) read what
they need from the scheduling API, which audits the access.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from careloop_contracts.base import Event, Id, UtcDatetime

AppointmentStatusName = Literal["proposed", "booked", "arrived", "fulfilled", "noshow", "cancelled"]
"""FHIR R4 ``Appointment.status`` values the scheduling service uses."""

ConfirmationName = Literal["unconfirmed", "confirmed"]

TOPIC = "careloop.scheduling"

# The location details every patient-facing scheduling event carries, so messaging can
# write the local time and sign neutrally without reading scheduling's data.
LocationTimeZone = Annotated[
    str,
    Field(max_length=64, description="IANA zone of the location, to show the local date and time."),
]
PracticeName = Annotated[
    str,
    Field(
        max_length=200,
        description="Display name to sign the message with (neutral for sensitive locations).",
    ),
]
SensitiveLocation = Annotated[
    bool,
    Field(description="Behavioral health and similar: neutral sender, no location details."),
]


class AppointmentEvent(Event):
    """The appointment snapshot every appointment event carries (abstract)."""

    appointment_id: Id = Field(description="Id of the appointment.")
    patient_id: Id = Field(description="Id of the patient the appointment is for.")
    org_id: Id = Field(description="Organization (tenant) that owns the appointment.")
    location_id: Id = Field(description="Location where the visit takes place.")
    provider_id: Id = Field(description="Provider the visit is with.")
    appointment_type_id: Id = Field(description="Appointment type (its id, never its name).")
    start_at: UtcDatetime = Field(description="Start of the visit (UTC).")
    end_at: UtcDatetime = Field(description="End of the visit (UTC).")
    status: AppointmentStatusName = Field(description="FHIR status after the change.")
    confirmation: ConfirmationName = Field(description="Whether the patient confirmed.")
    occurred_at: UtcDatetime = Field(description="When the change was committed (UTC).")


class AppointmentBooked(AppointmentEvent):
    """Emitted when an appointment is booked, by staff or by the patient (self-scheduling),
    including the new appointment of a reschedule (`rescheduled_from_id` set)."""

    event_type = "careloop.scheduling.appointment.booked.v1"
    topic = TOPIC

    rescheduled_from_id: Id | None = Field(
        default=None, description="The cancelled appointment this one replaces, if any."
    )


class AppointmentCancelled(AppointmentEvent):
    """Emitted when an appointment is cancelled, by the clinic, by the patient, or as the
    old half of a reschedule (`rescheduled_to_id` set)."""

    event_type = "careloop.scheduling.appointment.cancelled.v1"
    topic = TOPIC

    rescheduled_to_id: Id | None = Field(
        default=None, description="The appointment that replaces this one, if rescheduled."
    )


class AppointmentRescheduled(AppointmentEvent):
    """Emitted once per reschedule, after the old appointment's cancellation and the new
    one's booking; the snapshot is the new appointment's."""

    event_type = "careloop.scheduling.appointment.rescheduled.v1"
    topic = TOPIC

    previous_appointment_id: Id = Field(description="The cancelled, replaced appointment.")
    previous_start_at: UtcDatetime = Field(description="Start of the replaced visit (UTC).")


class AppointmentConfirmed(AppointmentEvent):
    """Emitted when the patient's attendance is confirmed (by the patient or by staff on
    the patient's word); reminders may stop asking."""

    event_type = "careloop.scheduling.appointment.confirmed.v1"
    topic = TOPIC


class AppointmentCheckedIn(AppointmentEvent):
    """Emitted when the patient arrives and is checked in (FHIR status `arrived`)."""

    event_type = "careloop.scheduling.appointment.checked_in.v1"
    topic = TOPIC


class AppointmentNoShow(AppointmentEvent):
    """Emitted when staff mark a booked appointment as a no-show (FHIR `noshow`)."""

    event_type = "careloop.scheduling.appointment.no_show.v1"
    topic = TOPIC


# Every event that carries an appointment's status after the change: a consumer that
# keeps a view of appointments handles them alike, the status alone deciding.
APPOINTMENT_EVENTS: tuple[type[AppointmentEvent], ...] = (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentRescheduled,
    AppointmentConfirmed,
    AppointmentCheckedIn,
    AppointmentNoShow,
)


ReminderTouchName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]


class ReminderDue(Event):
    """Emitted when one touch of an appointment's reminder sequence is due (a durable
    timer fired): the booking confirmation, "3 days before", "1 day before", "morning
    of", or a touch an organization configured. Messaging turns it into at most one
    message on the patient's channel (respecting opt-outs, preferences and the contact
    budget). Carries no PHI beyond ids and the visit time: the practice's display name
    and the local time are not PHI, and a sensitive location's name is never sent.
    `touch_key` is unique per appointment and touch, so a consumer can refuse a second
    message for the same touch."""

    event_type = "careloop.scheduling.reminder.due.v1"
    topic = TOPIC

    touch_key: Id = Field(description="`<appointment_id>:<touch>`: one message at most per key.")
    touch: ReminderTouchName = Field(description="The touch: `confirmation`, `3_days_before`, ...")
    appointment_id: Id = Field(description="Id of the appointment.")
    patient_id: Id = Field(description="Id of the patient to contact.")
    org_id: Id = Field(description="Organization (tenant) that owns the appointment.")
    location_id: Id = Field(description="Location where the visit takes place.")
    start_at: UtcDatetime = Field(description="Start of the visit (UTC).")
    location_time_zone: LocationTimeZone
    practice_name: PracticeName
    sensitive_location: SensitiveLocation
    due_at: UtcDatetime = Field(description="When the touch was planned to fire (UTC).")


class RescheduleOffered(Event):
    """Emitted when a patient asked to reschedule (replied `R`) and scheduling found open
    slots of the same type, provider and location: the numbered options, held for no one
    (the first to book a slot gets it). Messaging sends them; the patient's numbered
    reply (`reply.received` with intent `choose`) rebooks the appointment. No PHI beyond
    ids and times."""

    event_type = "careloop.scheduling.reschedule.offered.v1"
    topic = TOPIC

    offer_id: Id = Field(description="Id of the offer; one message at most per offer.")
    appointment_id: Id = Field(description="The appointment to move.")
    patient_id: Id = Field(description="Id of the patient to contact.")
    org_id: Id = Field(description="Organization (tenant) that owns the appointment.")
    location_id: Id = Field(description="Location where the visit takes place.")
    options: list[UtcDatetime] = Field(
        min_length=1, max_length=9, description="Start times offered (UTC), option 1 first."
    )
    location_time_zone: LocationTimeZone
    practice_name: PracticeName
    sensitive_location: SensitiveLocation
    expires_at: UtcDatetime = Field(description="After this a numbered reply is refused.")


class WaitlistSlotOffered(Event):
    """Emitted when a time freed by a cancellation or a reschedule is offered to one
    waitlisted patient (the first matching entries in waitlist order each get one
    offer; the first to accept books it). Messaging texts the patient, who answers `Y`
    (`reply.received.v2` with intent `accept` and this offer id). No PHI beyond ids and
    the time: no provider, no visit type."""

    event_type = "careloop.scheduling.waitlist.slot_offered.v1"
    topic = TOPIC

    offer_id: Id = Field(description="Id of the offer; one message at most per offer.")
    entry_id: Id = Field(description="The waitlist entry the offer is made to.")
    patient_id: Id = Field(description="Id of the patient to contact.")
    org_id: Id = Field(description="Organization (tenant) that owns the waitlist.")
    location_id: Id = Field(description="Location where the visit would take place.")
    appointment_id: Id | None = Field(
        default=None,
        description="The patient's existing appointment the slot would replace (an entry "
        "asking for an earlier time), if any.",
    )
    start_at: UtcDatetime = Field(description="Start of the offered time (UTC).")
    location_time_zone: LocationTimeZone
    practice_name: PracticeName
    sensitive_location: SensitiveLocation
    expires_at: UtcDatetime = Field(
        description="After this an acceptance is refused (never after the start)."
    )


WaitlistCloseReason = Literal["accepted", "taken", "expired", "withdrawn", "answered_late"]
"""Why a waitlist offer closed: `accepted` (this patient booked the time), `taken`
(another patient accepted first, or the time was booked otherwise), `expired` (no
answer before `expires_at`), `withdrawn` (the patient left the waitlist), `answered_late`
(an acceptance came after the offer had closed for one of the other reasons)."""


class WaitlistOfferClosed(Event):
    """Emitted when a waitlist offer can no longer be accepted, and again when a patient
    answers an offer that had already closed (`answered_late`). Messaging tells the
    patient the time is gone for `taken` and `answered_late` (at most one such message
    per offer, and only if the offer message itself went out); `accepted`, `expired`
    and `withdrawn` send nothing (the booking sends its own confirmation). No PHI beyond
    ids and the time."""

    event_type = "careloop.scheduling.waitlist.offer_closed.v1"
    topic = TOPIC

    offer_id: Id = Field(description="The closed offer.")
    entry_id: Id = Field(description="The waitlist entry the offer was made to.")
    patient_id: Id = Field(description="Id of the patient the offer was made to.")
    org_id: Id = Field(description="Organization (tenant) that owns the waitlist.")
    location_id: Id = Field(description="Location of the offered time.")
    reason: WaitlistCloseReason = Field(description="Why the offer closed.")
    start_at: UtcDatetime = Field(description="Start of the offered time (UTC).")
    location_time_zone: LocationTimeZone
    practice_name: PracticeName
    sensitive_location: SensitiveLocation
    appointment_id: Id | None = Field(
        default=None, description="For `accepted`: the appointment booked (or moved) into the time."
    )
    closed_at: UtcDatetime = Field(description="When the offer closed (UTC).")
