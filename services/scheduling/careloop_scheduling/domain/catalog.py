"""What can be booked: providers, appointment types and their vocabularies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class VisitCategory(StrEnum):
    IN_PERSON = "in_person"
    TELEHEALTH = "telehealth"
    PHONE = "phone"


class PatientKind(StrEnum):
    """Whether the type is for patients new to the practice or established ones."""

    NEW = "new"
    ESTABLISHED = "established"


class ClosureReason(StrEnum):
    HOLIDAY = "holiday"
    LEAVE = "leave"
    OTHER = "other"


@dataclass(frozen=True)
class Provider:
    id: str
    org_id: str
    display_name: str
    location_ids: tuple[str, ...]
    active: bool = True

    def works_at(self, location_id: str) -> bool:
        return location_id in self.location_ids


@dataclass(frozen=True)
class AppointmentType:
    id: str
    org_id: str
    name: str
    duration_minutes: int
    visit_category: VisitCategory
    patient_kind: PatientKind
    active: bool = True

    @property
    def duration(self) -> timedelta:
        return timedelta(minutes=self.duration_minutes)


def time_zone(name: str) -> ZoneInfo:
    """The IANA zone `name`; ValueError for anything zoneinfo does not know."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not an IANA time zone") from exc
