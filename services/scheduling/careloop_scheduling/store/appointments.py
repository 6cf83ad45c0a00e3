"""Appointments: booking (the double-booking constraint decides), lifecycle saves with
optimistic versions, listings and a patient's visit history."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from careloop_kit.repository import Repository, given, in_scope
from careloop_kit.rows import record_of, values_of
from careloop_scheduling.domain.appointment import (
    ACTIVE_STATUSES,
    Appointment,
    AppointmentStatus,
    Confirmation,
)
from careloop_scheduling.domain.attendance import PastVisit
from careloop_scheduling.domain.availability import Busy
from careloop_scheduling.store.tables import NO_DOUBLE_BOOKING, appointment


class SlotTaken(Exception):
    """The provider already has an active appointment overlapping this time."""


class StaleAppointment(Exception):
    """The appointment changed since it was read."""


class AppointmentRepository(Repository):
    """Appointments of an organization; the exclusion constraint guards double booking."""

    async def busy(
        self, org_id: str, provider_ids: Collection[str], start: datetime, end: datetime
    ) -> list[Busy]:
        rows = (
            await self._session.execute(
                select(
                    appointment.c.provider_id, appointment.c.start_at, appointment.c.end_at
                ).where(
                    appointment.c.org_id == org_id,
                    appointment.c.provider_id.in_(list(provider_ids)),
                    appointment.c.status.in_([s.value for s in ACTIVE_STATUSES]),
                    appointment.c.start_at < end,
                    appointment.c.end_at > start,
                )
            )
        ).all()
        return [Busy(r.provider_id, r.start_at, r.end_at) for r in rows]

    async def add_appointment(self, appt: Appointment, now: datetime) -> None:
        """Insert an appointment; `SlotTaken` when the provider's time is already held.

        The exclusion constraint decides, so two concurrent bookings of one slot cannot
        both succeed; a savepoint keeps the request's transaction usable afterwards."""
        try:
            async with self._session.begin_nested():
                await self._session.execute(
                    insert(appointment).values(**_values(appt), created_at=now, updated_at=now)
                )
        except IntegrityError as exc:
            if NO_DOUBLE_BOOKING in str(exc.orig):
                raise SlotTaken(appt.provider_id) from exc
            raise

    async def get_appointment(
        self, org_id: str, appointment_id: str, *, for_update: bool = False
    ) -> Appointment | None:
        row = await self._row(appointment, org_id, appointment_id, for_update=for_update)
        return None if row is None else _appointment(row)

    async def save_appointment(
        self, appt: Appointment, *, previous_version: int, now: datetime
    ) -> None:
        result = await self._session.execute(
            update(appointment)
            .where(
                appointment.c.id == appt.id,
                appointment.c.org_id == appt.org_id,
                appointment.c.version == previous_version,
            )
            .values(**_values(appt), updated_at=now)
        )
        if getattr(result, "rowcount", 0) != 1:
            raise StaleAppointment(appt.id)

    async def list_appointments(
        self,
        org_id: str,
        *,
        patient_id: str | None,
        provider_id: str | None,
        start: datetime | None,
        end: datetime | None,
        locations: Collection[str] | None,
        limit: int,
        hidden_locations: Collection[str] = (),
    ) -> list[Appointment]:
        """Appointments in start order; none at `hidden_locations` (sensitive locations
        the caller may not see), so a page is never short because of them."""
        conditions: list[Any] = [
            appointment.c.org_id == org_id,
            *given(appointment, patient_id=patient_id, provider_id=provider_id),
            *in_scope(appointment.c.location_id, locations, hidden_locations),
        ]
        if start is not None:
            conditions.append(appointment.c.end_at > start)
        if end is not None:
            conditions.append(appointment.c.start_at < end)
        rows = (
            await self._session.execute(
                select(appointment)
                .where(*conditions)
                .order_by(appointment.c.start_at, appointment.c.id)
                .limit(limit)
            )
        ).all()
        return [_appointment(r._mapping) for r in rows]

    async def patient_visits(
        self, org_id: str, patient_id: str, *, since: datetime, until: datetime
    ) -> list[PastVisit]:
        """The patient's appointments starting in `[since, until)`, oldest first, each
        with the moment it last changed (at every location: the caller filters)."""
        rows = (
            await self._session.execute(
                select(appointment)
                .where(
                    appointment.c.org_id == org_id,
                    appointment.c.patient_id == patient_id,
                    appointment.c.start_at >= since,
                    appointment.c.start_at < until,
                )
                .order_by(appointment.c.start_at, appointment.c.id)
            )
        ).all()
        return [PastVisit(_appointment(r._mapping), r.updated_at) for r in rows]

    async def patient_seen_at(
        self, org_id: str, patient_id: str, locations: Collection[str]
    ) -> bool:
        """Whether the patient has any appointment, ever, at one of the locations."""
        found = await self._session.scalar(
            select(appointment.c.id)
            .where(
                appointment.c.org_id == org_id,
                appointment.c.patient_id == patient_id,
                appointment.c.location_id.in_(list(locations)),
            )
            .limit(1)
        )
        return found is not None

    async def lock_appointment_nowait(
        self, org_id: str, appointment_id: str, *, exclusive: bool = False
    ) -> Appointment | None:
        """The appointment, share-locked (`exclusive`: locked for a change); raises at
        once if a change holds it.

        A timer firing while a request changes its appointment retries later instead of
        waiting: the request already locked the appointment and waits for the timer
        rows, so waiting here would deadlock."""
        row = await self._row(
            appointment, org_id, appointment_id, for_update=True, read=not exclusive, nowait=True
        )
        return None if row is None else _appointment(row)


def _values(appt: Appointment) -> dict[str, Any]:
    return values_of(appt) | {
        "status": appt.status.value,
        "confirmation": appt.confirmation.value,
    }


def _appointment(m: Any) -> Appointment:
    return record_of(
        Appointment, m, convert={"status": AppointmentStatus, "confirmation": Confirmation}
    )
