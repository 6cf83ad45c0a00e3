"""Appointment events: the fields they all carry."""

from __future__ import annotations

from datetime import datetime

from careloop_scheduling.domain.appointment import Appointment


def appointment_fields(a: Appointment, now: datetime) -> dict[str, object]:
    """The fields every appointment event carries (ids and times, never a name)."""
    return {
        "appointment_id": a.id,
        "patient_id": a.patient_id,
        "org_id": a.org_id,
        "location_id": a.location_id,
        "provider_id": a.provider_id,
        "appointment_type_id": a.appointment_type_id,
        "start_at": a.start_at,
        "end_at": a.end_at,
        "status": a.status.value,
        "confirmation": a.confirmation.value,
        "occurred_at": now,
    }
