"""Request and response bodies of the scheduling API."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from careloop_kit.api_types import IdStr
from careloop_scheduling.domain.appointment import AppointmentStatus, Confirmation
from careloop_scheduling.domain.catalog import ClosureReason, PatientKind, VisitCategory


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LocationRead(BaseModel):
    """Scheduling's view of a location, as identity last announced it (read-only here:
    change a location in identity, `PATCH /organizations/{org}/locations/{id}`)."""

    location_id: str
    time_zone: str
    display_name: str | None
    sensitive: bool
    features: dict[str, bool] = Field(description="Feature switches; a switch not named is on.")
    changed_at: datetime | None = Field(description="When identity made the change applied last.")


TouchName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]


class TouchSettings(_In):
    enabled: bool | None = Field(None, description="Turn the touch on or off; none: inherit.")
    days_before: int | None = Field(
        None, ge=0, le=60, description="Local calendar days before the visit (0: the day itself)."
    )
    send_time: time | None = Field(
        None, description="Local wall time, e.g. 07:30 (`morning_of`'s hour); none: inherit."
    )


class ReminderSettingsIn(_In):
    """What this level changes; every field left out (or null) inherits."""

    send_time: time | None = Field(
        None, description="Local wall time of the day-offset touches (default 10:00)."
    )
    min_spacing_minutes: int | None = Field(
        None, ge=0, le=1440, description="Least minutes between two touches (default 240)."
    )
    quiet_hours_start: time | None = Field(
        None, description="Local start of quiet hours (default 20:00); set with the end."
    )
    quiet_hours_end: time | None = Field(
        None, description="Local end of quiet hours (default 08:00); set with the start."
    )
    touches: dict[TouchName, TouchSettings] = Field(
        default_factory=dict,
        description="Per touch: `confirmation`, `3_days_before`, `1_day_before`, `morning_of`.",
    )


class EffectiveTouch(BaseModel):
    name: str
    kind: str
    enabled: bool
    days_before: int
    send_time: time | None


class EffectiveReminders(BaseModel):
    """The sequence this level ends up with, defaults and the levels above included."""

    send_time: time
    min_spacing_minutes: int
    quiet_hours_start: time
    quiet_hours_end: time
    touches: list[EffectiveTouch]


class ReminderSettingsRead(ReminderSettingsIn):
    level: str
    scope_id: str | None
    effective: EffectiveReminders


class ProviderCreate(_In):
    display_name: str = Field(min_length=1, max_length=200)
    location_ids: list[IdStr] = Field(min_length=1, max_length=50)


class ProviderRead(BaseModel):
    id: str
    org_id: str
    display_name: str
    location_ids: list[str]
    active: bool


class ProviderPage(BaseModel):
    items: list[ProviderRead]
    count: int


class AppointmentTypeCreate(_In):
    name: str = Field(min_length=1, max_length=200)
    duration_minutes: int = Field(ge=5, le=480)
    visit_category: VisitCategory = VisitCategory.IN_PERSON
    patient_kind: PatientKind = PatientKind.ESTABLISHED


class AppointmentTypeRead(BaseModel):
    id: str
    org_id: str
    name: str
    duration_minutes: int
    visit_category: VisitCategory
    patient_kind: PatientKind
    active: bool


class AppointmentTypePage(BaseModel):
    items: list[AppointmentTypeRead]
    count: int


class AvailabilityCreate(_In):
    location_id: IdStr
    weekday: int = Field(ge=0, le=6, description="0 = Monday ... 6 = Sunday.")
    start: time = Field(description="Local start time at the location, e.g. 09:00.")
    end: time = Field(description="Local end time at the location, same day.")


class AvailabilityRead(BaseModel):
    id: str
    provider_id: str
    location_id: str
    weekday: int
    start: time
    end: time


class ClosureCreate(_In):
    first_day: date
    last_day: date
    location_id: IdStr | None = Field(
        None, description="Close one location only (holiday); none: every location (leave)."
    )
    reason: ClosureReason = ClosureReason.OTHER


class ClosureRead(BaseModel):
    id: str
    provider_id: str
    location_id: str | None
    first_day: date
    last_day: date
    reason: ClosureReason


class ProviderSchedule(BaseModel):
    provider_id: str
    windows: list[AvailabilityRead]


class SlotRead(BaseModel):
    provider_id: str
    location_id: str
    start_at: datetime
    end_at: datetime
    local_start: str = Field(description="Start in the location's local time (ISO 8601).")


class SlotPage(BaseModel):
    items: list[SlotRead]
    count: int
    time_zone: str


class AppointmentCreate(_In):
    patient_id: IdStr
    provider_id: IdStr
    appointment_type_id: IdStr
    location_id: IdStr
    start_at: AwareDatetime


class AppointmentCancel(_In):
    reason: str | None = Field(None, max_length=200)


class AppointmentReschedule(_In):
    start_at: AwareDatetime
    provider_id: IdStr | None = Field(None, description="Another provider; default: the same.")


class AppointmentRead(BaseModel):
    id: str
    org_id: str
    patient_id: str
    provider_id: str
    location_id: str
    appointment_type_id: str
    start_at: datetime
    end_at: datetime
    status: AppointmentStatus
    confirmation: Confirmation
    rescheduled_from_id: str | None
    rescheduled_to_id: str | None
    cancel_reason: str | None
    version: int


class AppointmentPage(BaseModel):
    items: list[AppointmentRead]
    count: int


class RescheduleResult(BaseModel):
    cancelled: AppointmentRead
    booked: AppointmentRead


class AttendanceCounts(BaseModel):
    """Counts over every visit of the patient in the window, at every location."""

    total: int = Field(description="Visits that started in the window.")
    attended: int = Field(description="Arrived or fulfilled.")
    no_show: int
    cancelled: int = Field(description="Cancelled, reschedules included.")
    rescheduled: int = Field(description="Cancelled by a reschedule.")
    late_cancelled: int = Field(
        description="Cancelled (or rescheduled) less than 24 h before the start."
    )
    unresolved: int = Field(
        description="Past the start, still booked: neither checked in nor marked yet."
    )
    no_show_rate: float | None = Field(
        description="no_show / (attended + no_show); null without any resolved visit."
    )


class AttendanceRead(BaseModel):
    patient_id: str
    since: datetime
    as_of: datetime
    counts: AttendanceCounts
    items: list[AppointmentRead] = Field(
        description="The window's visits at locations in the caller's scope, oldest first."
    )
    not_listed: int = Field(
        description="Visits counted but not listed: at locations outside the caller's scope."
    )
