"""Every query on scheduling tables. Repositories never commit: the request boundary does."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any
from uuid import uuid4

from sqlalchemy import case, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_scheduling.domain.appointment import (
    ACTIVE_STATUSES,
    Appointment,
    AppointmentStatus,
    Confirmation,
)
from careloop_scheduling.domain.attendance import PastVisit
from careloop_scheduling.domain.availability import Busy, Closure, WeeklyWindow
from careloop_scheduling.domain.catalog import (
    AppointmentType,
    ClosureReason,
    PatientKind,
    Provider,
    VisitCategory,
)
from careloop_scheduling.domain.reminder_settings import Level, ReminderSettings
from careloop_scheduling.domain.reminders import QuietHours, TouchOverride
from careloop_scheduling.domain.reschedule_offer import OfferStatus, RescheduleOffer
from careloop_scheduling.domain.waitlist import (
    EntryStatus,
    FreedSlot,
    PartOfDay,
    SlotStatus,
    WaitlistEntry,
    WaitlistOffer,
)
from careloop_scheduling.domain.waitlist import OfferStatus as WaitlistOfferStatus
from careloop_scheduling.store.tables import (
    NO_DOUBLE_BOOKING,
    appointment,
    appointment_type,
    availability,
    availability_exception,
    location,
    platform,
    provider,
    reminder_setting,
    reschedule_offer,
    waitlist_entry,
    waitlist_offer,
    waitlist_slot,
)


class SlotTaken(Exception):
    """The provider already has an active appointment overlapping this time."""


class StaleAppointment(Exception):
    """The appointment changed since it was read."""


@dataclass(frozen=True)
class LocationInfo:
    """What scheduling knows of a location: its zone, and how reminders sign."""

    id: str
    time_zone: str
    display_name: str | None
    sensitive: bool


@dataclass(frozen=True)
class StoredWindow:
    id: str
    window: WeeklyWindow


@dataclass(frozen=True)
class StoredClosure:
    id: str
    closure: Closure
    reason: ClosureReason


def new_id() -> str:
    return str(uuid4())


class SchedulingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    # --- locations ------------------------------------------------------------------

    async def set_location(self, org_id: str, item: LocationInfo, now: datetime) -> None:
        values = {
            "time_zone": item.time_zone,
            "display_name": item.display_name,
            "sensitive": item.sensitive,
            "updated_at": now,
        }
        statement = pg_insert(location).values(org_id=org_id, id=item.id, **values)
        await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=[location.c.org_id, location.c.id], set_=values
            )
        )

    async def get_location(self, org_id: str, location_id: str) -> LocationInfo | None:
        row = (
            await self._session.execute(
                select(location).where(location.c.org_id == org_id, location.c.id == location_id)
            )
        ).first()
        if row is None:
            return None
        return LocationInfo(row.id, row.time_zone, row.display_name, row.sensitive)

    async def time_zone(self, org_id: str, location_id: str) -> str | None:
        value: str | None = await self._session.scalar(
            select(location.c.time_zone).where(
                location.c.org_id == org_id, location.c.id == location_id
            )
        )
        return value

    # --- providers and types --------------------------------------------------------

    async def add_provider(self, item: Provider, now: datetime) -> None:
        await self._session.execute(
            insert(provider).values(
                id=item.id,
                org_id=item.org_id,
                display_name=item.display_name,
                location_ids=list(item.location_ids),
                active=item.active,
                created_at=now,
            )
        )

    async def get_provider(self, org_id: str, provider_id: str) -> Provider | None:
        row = (
            await self._session.execute(
                select(provider).where(provider.c.org_id == org_id, provider.c.id == provider_id)
            )
        ).first()
        return None if row is None else _provider(row._mapping)

    async def list_providers(self, org_id: str, location_id: str | None = None) -> list[Provider]:
        query = select(provider).where(provider.c.org_id == org_id, provider.c.active)
        if location_id is not None:
            query = query.where(provider.c.location_ids.any(location_id))
        rows = (await self._session.execute(query.order_by(provider.c.display_name))).all()
        return [_provider(r._mapping) for r in rows]

    async def add_type(self, item: AppointmentType, now: datetime) -> None:
        await self._session.execute(
            insert(appointment_type).values(
                id=item.id,
                org_id=item.org_id,
                name=item.name,
                duration_minutes=item.duration_minutes,
                visit_category=item.visit_category.value,
                patient_kind=item.patient_kind.value,
                active=item.active,
                created_at=now,
            )
        )

    async def get_type(self, org_id: str, type_id: str) -> AppointmentType | None:
        row = (
            await self._session.execute(
                select(appointment_type).where(
                    appointment_type.c.org_id == org_id, appointment_type.c.id == type_id
                )
            )
        ).first()
        return None if row is None else _type(row._mapping)

    async def list_types(self, org_id: str) -> list[AppointmentType]:
        rows = (
            await self._session.execute(
                select(appointment_type)
                .where(appointment_type.c.org_id == org_id, appointment_type.c.active)
                .order_by(appointment_type.c.name)
            )
        ).all()
        return [_type(r._mapping) for r in rows]

    # --- availability ---------------------------------------------------------------

    async def add_window(self, org_id: str, window: WeeklyWindow, now: datetime) -> str:
        window_id = new_id()
        await self._session.execute(
            insert(availability).values(
                id=window_id,
                org_id=org_id,
                provider_id=window.provider_id,
                location_id=window.location_id,
                weekday=window.weekday,
                start_time=window.start,
                end_time=window.end,
                created_at=now,
            )
        )
        return window_id

    async def windows(
        self, org_id: str, location_id: str, provider_ids: Collection[str] | None = None
    ) -> list[StoredWindow]:
        query = select(availability).where(
            availability.c.org_id == org_id, availability.c.location_id == location_id
        )
        if provider_ids is not None:
            query = query.where(availability.c.provider_id.in_(list(provider_ids)))
        rows = (await self._session.execute(query.order_by(availability.c.weekday))).all()
        return [
            StoredWindow(
                r.id,
                WeeklyWindow(r.provider_id, r.location_id, r.weekday, r.start_time, r.end_time),
            )
            for r in rows
        ]

    async def provider_windows(self, org_id: str, provider_id: str) -> list[StoredWindow]:
        rows = (
            await self._session.execute(
                select(availability)
                .where(availability.c.org_id == org_id, availability.c.provider_id == provider_id)
                .order_by(availability.c.location_id, availability.c.weekday)
            )
        ).all()
        return [
            StoredWindow(
                r.id,
                WeeklyWindow(r.provider_id, r.location_id, r.weekday, r.start_time, r.end_time),
            )
            for r in rows
        ]

    async def add_closure(
        self, org_id: str, closure: Closure, reason: ClosureReason, now: datetime
    ) -> str:
        closure_id = new_id()
        await self._session.execute(
            insert(availability_exception).values(
                id=closure_id,
                org_id=org_id,
                provider_id=closure.provider_id,
                location_id=closure.location_id,
                first_day=closure.first,
                last_day=closure.last,
                reason=reason.value,
                created_at=now,
            )
        )
        return closure_id

    async def closures(
        self, org_id: str, provider_ids: Collection[str], first: date, last: date
    ) -> list[StoredClosure]:
        rows = (
            await self._session.execute(
                select(availability_exception).where(
                    availability_exception.c.org_id == org_id,
                    availability_exception.c.provider_id.in_(list(provider_ids)),
                    availability_exception.c.first_day <= last,
                    availability_exception.c.last_day >= first,
                )
            )
        ).all()
        return [
            StoredClosure(
                r.id,
                Closure(r.provider_id, r.first_day, r.last_day, r.location_id),
                ClosureReason(r.reason),
            )
            for r in rows
        ]

    # --- appointments ---------------------------------------------------------------

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
        query = select(appointment).where(
            appointment.c.org_id == org_id, appointment.c.id == appointment_id
        )
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return None if row is None else _appointment(row._mapping)

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
    ) -> list[Appointment]:
        conditions: list[Any] = [appointment.c.org_id == org_id]
        if patient_id is not None:
            conditions.append(appointment.c.patient_id == patient_id)
        if provider_id is not None:
            conditions.append(appointment.c.provider_id == provider_id)
        if start is not None:
            conditions.append(appointment.c.end_at > start)
        if end is not None:
            conditions.append(appointment.c.start_at < end)
        if locations is not None:
            conditions.append(appointment.c.location_id.in_(list(locations)))
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

    # --- reminders ------------------------------------------------------------------

    async def reminder_settings(
        self, org_id: str, level: Level, scope_id: str = ""
    ) -> ReminderSettings | None:
        row = (
            await self._session.execute(
                select(reminder_setting).where(
                    reminder_setting.c.org_id == org_id,
                    reminder_setting.c.level == level.value,
                    reminder_setting.c.scope_id == scope_id,
                )
            )
        ).first()
        return None if row is None else _reminder_settings(row._mapping)

    async def put_reminder_settings(
        self, org_id: str, level: Level, scope_id: str, item: ReminderSettings, now: datetime
    ) -> None:
        values: dict[str, Any] = {
            "send_time": item.send_time,
            "min_spacing_minutes": (
                None if item.min_spacing is None else int(item.min_spacing.total_seconds() // 60)
            ),
            "quiet_start": None if item.quiet_hours is None else item.quiet_hours.start,
            "quiet_end": None if item.quiet_hours is None else item.quiet_hours.end,
            "touches": {name: _touch_json(o) for name, o in item.touches.items()},
            "updated_at": now,
        }
        statement = pg_insert(reminder_setting).values(
            org_id=org_id, level=level.value, scope_id=scope_id, **values
        )
        await self._session.execute(
            statement.on_conflict_do_update(
                index_elements=[
                    reminder_setting.c.org_id,
                    reminder_setting.c.level,
                    reminder_setting.c.scope_id,
                ],
                set_=values,
            )
        )

    async def pending_timer_keys(self, key_prefix: str) -> list[str]:
        """Dedup keys of the timers not yet fired nor cancelled that start with the prefix."""
        timer = platform.timer
        rows = await self._session.scalars(
            select(timer.c.dedup_key)
            .where(
                timer.c.dedup_key.startswith(key_prefix, autoescape=True),
                timer.c.fired_at.is_(None),
                timer.c.cancelled_at.is_(None),
            )
            .order_by(timer.c.dedup_key)
        )
        return [key for key in rows if key is not None]

    async def lock_appointment_nowait(
        self, org_id: str, appointment_id: str, *, exclusive: bool = False
    ) -> Appointment | None:
        """The appointment, share-locked (`exclusive`: locked for a change); raises at
        once if a change holds it.

        A timer firing while a request changes its appointment retries later instead of
        waiting: the request already locked the appointment and waits for the timer
        rows, so waiting here would deadlock."""
        row = (
            await self._session.execute(
                select(appointment)
                .where(appointment.c.org_id == org_id, appointment.c.id == appointment_id)
                .with_for_update(read=not exclusive, nowait=True)
            )
        ).first()
        return None if row is None else _appointment(row._mapping)

    # --- reschedule offers ----------------------------------------------------------

    async def add_offer(self, offer: RescheduleOffer) -> None:
        await self._session.execute(
            insert(reschedule_offer).values(
                id=offer.id,
                org_id=offer.org_id,
                appointment_id=offer.appointment_id,
                patient_id=offer.patient_id,
                options=[o.isoformat() for o in offer.options],
                created_at=offer.created_at,
                expires_at=offer.expires_at,
                status=offer.status.value,
            )
        )

    async def latest_offer(self, org_id: str, appointment_id: str) -> RescheduleOffer | None:
        """The appointment's open offer if it has one (there is at most one), else its
        most recent one.

        Open first, not merely newest: an offer replaced within the same instant (a
        refused number answered at once) has the same `created_at` as its successor."""
        is_open = case((reschedule_offer.c.status == OfferStatus.OPEN.value, 0), else_=1)
        row = (
            await self._session.execute(
                select(reschedule_offer)
                .where(
                    reschedule_offer.c.org_id == org_id,
                    reschedule_offer.c.appointment_id == appointment_id,
                )
                .order_by(is_open, reschedule_offer.c.created_at.desc())
                .limit(1)
            )
        ).first()
        return None if row is None else _offer(row._mapping)

    async def set_offer_status(self, org_id: str, offer_id: str, status: OfferStatus) -> None:
        await self._session.execute(
            update(reschedule_offer)
            .where(reschedule_offer.c.org_id == org_id, reschedule_offer.c.id == offer_id)
            .values(status=status.value)
        )

    async def expire_open_offers(self, org_id: str, appointment_id: str) -> None:
        """Retire the appointment's open offers: a newer one replaces them."""
        await self._session.execute(
            update(reschedule_offer)
            .where(
                reschedule_offer.c.org_id == org_id,
                reschedule_offer.c.appointment_id == appointment_id,
                reschedule_offer.c.status == OfferStatus.OPEN.value,
            )
            .values(status=OfferStatus.EXPIRED.value)
        )

    # --- waitlist -------------------------------------------------------------------

    async def add_waitlist_entry(self, entry: WaitlistEntry, now: datetime) -> WaitlistEntry:
        """Insert an entry; returns it with its waitlist position."""
        position = await self._session.scalar(
            insert(waitlist_entry)
            .values(
                id=entry.id,
                org_id=entry.org_id,
                patient_id=entry.patient_id,
                location_id=entry.location_id,
                appointment_type_id=entry.appointment_type_id,
                provider_id=entry.provider_id,
                earliest_date=entry.earliest_date,
                latest_date=entry.latest_date,
                weekdays=None if entry.weekdays is None else list(entry.weekdays),
                parts_of_day=(
                    None if entry.parts_of_day is None else [p.value for p in entry.parts_of_day]
                ),
                appointment_id=entry.appointment_id,
                status=entry.status.value,
                created_at=now,
                updated_at=now,
            )
            .returning(waitlist_entry.c.position)
        )
        return replace(entry, position=int(position or 0), created_at=now)

    async def get_waitlist_entry(
        self, org_id: str, entry_id: str, *, for_update: bool = False
    ) -> WaitlistEntry | None:
        query = select(waitlist_entry).where(
            waitlist_entry.c.org_id == org_id, waitlist_entry.c.id == entry_id
        )
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return None if row is None else _entry(row._mapping)

    async def list_waitlist_entries(
        self,
        org_id: str,
        *,
        patient_id: str | None,
        location_id: str | None,
        locations: Collection[str] | None,
        statuses: Collection[EntryStatus],
        limit: int,
    ) -> list[WaitlistEntry]:
        """Entries in waitlist order (first in first)."""
        conditions: list[Any] = [
            waitlist_entry.c.org_id == org_id,
            waitlist_entry.c.status.in_([s.value for s in statuses]),
        ]
        if patient_id is not None:
            conditions.append(waitlist_entry.c.patient_id == patient_id)
        if location_id is not None:
            conditions.append(waitlist_entry.c.location_id == location_id)
        if locations is not None:
            conditions.append(waitlist_entry.c.location_id.in_(list(locations)))
        rows = (
            await self._session.execute(
                select(waitlist_entry)
                .where(*conditions)
                .order_by(waitlist_entry.c.position)
                .limit(limit)
            )
        ).all()
        return [_entry(r._mapping) for r in rows]

    async def active_entry_exists(
        self, org_id: str, patient_id: str, location_id: str, type_id: str
    ) -> bool:
        found = await self._session.scalar(
            select(waitlist_entry.c.id)
            .where(
                waitlist_entry.c.org_id == org_id,
                waitlist_entry.c.patient_id == patient_id,
                waitlist_entry.c.location_id == location_id,
                waitlist_entry.c.appointment_type_id == type_id,
                waitlist_entry.c.status.in_([EntryStatus.WAITING.value, EntryStatus.OFFERED.value]),
            )
            .limit(1)
        )
        return found is not None

    async def waiting_entries(
        self, org_id: str, location_id: str, type_id: str, *, on_or_after: date
    ) -> list[WaitlistEntry]:
        """Waiting entries of one location and type whose window has not ended, in
        waitlist order, locked (skipping none: a concurrent round waits) so an entry is
        never offered two slots at once."""
        rows = (
            await self._session.execute(
                select(waitlist_entry)
                .where(
                    waitlist_entry.c.org_id == org_id,
                    waitlist_entry.c.location_id == location_id,
                    waitlist_entry.c.appointment_type_id == type_id,
                    waitlist_entry.c.status == EntryStatus.WAITING.value,
                    waitlist_entry.c.latest_date >= on_or_after,
                )
                .order_by(waitlist_entry.c.position)
                .with_for_update()
            )
        ).all()
        return [_entry(r._mapping) for r in rows]

    async def set_entry_status(
        self,
        org_id: str,
        entry_ids: Collection[str],
        status: EntryStatus,
        now: datetime,
        *,
        only_if: EntryStatus | None = None,
        booked_appointment_id: str | None = None,
    ) -> None:
        if not entry_ids:
            return
        query = update(waitlist_entry).where(
            waitlist_entry.c.org_id == org_id, waitlist_entry.c.id.in_(list(entry_ids))
        )
        if only_if is not None:
            query = query.where(waitlist_entry.c.status == only_if.value)
        values: dict[str, Any] = {"status": status.value, "updated_at": now}
        if booked_appointment_id is not None:
            values["booked_appointment_id"] = booked_appointment_id
        await self._session.execute(query.values(**values))

    async def expire_entries_before(self, org_id: str, location_id: str, day: date) -> None:
        """Entries whose window ended before `day` leave the list."""
        await self._session.execute(
            update(waitlist_entry)
            .where(
                waitlist_entry.c.org_id == org_id,
                waitlist_entry.c.location_id == location_id,
                waitlist_entry.c.status == EntryStatus.WAITING.value,
                waitlist_entry.c.latest_date < day,
            )
            .values(status=EntryStatus.EXPIRED.value)
        )

    async def add_freed_slot(self, slot: FreedSlot) -> bool:
        """Insert; False when this appointment's time was already freed (the
        cancellation and the reschedule event of one move both report it)."""
        inserted = await self._session.scalar(
            pg_insert(waitlist_slot)
            .values(
                id=slot.id,
                org_id=slot.org_id,
                provider_id=slot.provider_id,
                location_id=slot.location_id,
                appointment_type_id=slot.appointment_type_id,
                start_at=slot.start_at,
                end_at=slot.end_at,
                source_appointment_id=slot.source_appointment_id,
                source_patient_id=slot.source_patient_id,
                status=slot.status.value,
                round=slot.round,
                created_at=slot.created_at,
                updated_at=slot.created_at,
            )
            .on_conflict_do_nothing(index_elements=[waitlist_slot.c.source_appointment_id])
            .returning(waitlist_slot.c.id)
        )
        return inserted is not None

    async def get_freed_slot(
        self, org_id: str, slot_id: str, *, lock: bool = False, nowait: bool = False
    ) -> FreedSlot | None:
        """The slot; `lock`: locked for a change (`nowait`: raise at once if held)."""
        query = select(waitlist_slot).where(
            waitlist_slot.c.org_id == org_id, waitlist_slot.c.id == slot_id
        )
        if lock:
            query = query.with_for_update(nowait=nowait)
        row = (await self._session.execute(query)).first()
        return None if row is None else _slot(row._mapping)

    async def update_freed_slot(self, slot: FreedSlot, now: datetime) -> None:
        await self._session.execute(
            update(waitlist_slot)
            .where(waitlist_slot.c.org_id == slot.org_id, waitlist_slot.c.id == slot.id)
            .values(
                status=slot.status.value,
                round=slot.round,
                filled_by_entry_id=slot.filled_by_entry_id,
                appointment_id=slot.appointment_id,
                updated_at=now,
            )
        )

    async def add_waitlist_offer(self, offer: WaitlistOffer) -> None:
        await self._session.execute(
            insert(waitlist_offer).values(
                id=offer.id,
                org_id=offer.org_id,
                slot_id=offer.slot_id,
                entry_id=offer.entry_id,
                patient_id=offer.patient_id,
                round=offer.round,
                status=offer.status.value,
                created_at=offer.created_at,
                expires_at=offer.expires_at,
            )
        )

    async def get_waitlist_offer(
        self, org_id: str, offer_id: str, *, for_update: bool = False
    ) -> WaitlistOffer | None:
        query = select(waitlist_offer).where(
            waitlist_offer.c.org_id == org_id, waitlist_offer.c.id == offer_id
        )
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return None if row is None else _waitlist_offer(row._mapping)

    async def slot_offers(
        self, slot_id: str, *, status: WaitlistOfferStatus | None = None
    ) -> list[WaitlistOffer]:
        """Every offer made of the slot (or those in `status`), in waitlist order: by
        round, then by the entry's place in line (offers of one round share a creation
        time, so that alone would leave their order, and the order of the events they
        close with, to chance)."""
        query = (
            select(waitlist_offer)
            .join(waitlist_entry, waitlist_entry.c.id == waitlist_offer.c.entry_id)
            .where(waitlist_offer.c.slot_id == slot_id)
        )
        if status is not None:
            query = query.where(waitlist_offer.c.status == status.value)
        rows = (
            await self._session.execute(
                query.order_by(waitlist_offer.c.round, waitlist_entry.c.position)
            )
        ).all()
        return [_waitlist_offer(r._mapping) for r in rows]

    async def open_offers_of_entry(self, org_id: str, entry_id: str) -> list[WaitlistOffer]:
        rows = (
            await self._session.execute(
                select(waitlist_offer).where(
                    waitlist_offer.c.org_id == org_id,
                    waitlist_offer.c.entry_id == entry_id,
                    waitlist_offer.c.status == WaitlistOfferStatus.OPEN.value,
                )
            )
        ).all()
        return [_waitlist_offer(r._mapping) for r in rows]

    async def close_waitlist_offer(
        self, offer_id: str, status: WaitlistOfferStatus, now: datetime
    ) -> None:
        await self._session.execute(
            update(waitlist_offer)
            .where(waitlist_offer.c.id == offer_id)
            .values(status=status.value, closed_at=now)
        )


def _offer(m: Any) -> RescheduleOffer:
    return RescheduleOffer(
        id=m["id"],
        org_id=m["org_id"],
        appointment_id=m["appointment_id"],
        patient_id=m["patient_id"],
        options=tuple(datetime.fromisoformat(o) for o in m["options"]),
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        status=OfferStatus(m["status"]),
    )


def _touch_json(change: TouchOverride) -> dict[str, Any]:
    return {
        "enabled": change.enabled,
        "days_before": change.days_before,
        "send_time": None if change.send_time is None else change.send_time.isoformat(),
    }


def _reminder_settings(m: Any) -> ReminderSettings:
    touches = {
        name: TouchOverride(
            enabled=t.get("enabled"),
            days_before=t.get("days_before"),
            send_time=None if t.get("send_time") is None else time.fromisoformat(t["send_time"]),
        )
        for name, t in (m["touches"] or {}).items()
    }
    quiet = (
        None
        if m["quiet_start"] is None or m["quiet_end"] is None
        else QuietHours(m["quiet_start"], m["quiet_end"])
    )
    spacing = m["min_spacing_minutes"]
    return ReminderSettings(
        send_time=m["send_time"],
        min_spacing=None if spacing is None else timedelta(minutes=spacing),
        touches=touches,
        quiet_hours=quiet,
    )


def _values(appt: Appointment) -> dict[str, Any]:
    return {
        "id": appt.id,
        "org_id": appt.org_id,
        "patient_id": appt.patient_id,
        "provider_id": appt.provider_id,
        "location_id": appt.location_id,
        "appointment_type_id": appt.appointment_type_id,
        "start_at": appt.start_at,
        "end_at": appt.end_at,
        "status": appt.status.value,
        "confirmation": appt.confirmation.value,
        "rescheduled_from_id": appt.rescheduled_from_id,
        "rescheduled_to_id": appt.rescheduled_to_id,
        "cancel_reason": appt.cancel_reason,
        "version": appt.version,
    }


def _provider(m: Any) -> Provider:
    return Provider(m["id"], m["org_id"], m["display_name"], tuple(m["location_ids"]), m["active"])


def _type(m: Any) -> AppointmentType:
    return AppointmentType(
        m["id"],
        m["org_id"],
        m["name"],
        m["duration_minutes"],
        VisitCategory(m["visit_category"]),
        PatientKind(m["patient_kind"]),
        m["active"],
    )


def _appointment(m: Any) -> Appointment:
    return Appointment(
        id=m["id"],
        org_id=m["org_id"],
        patient_id=m["patient_id"],
        provider_id=m["provider_id"],
        location_id=m["location_id"],
        appointment_type_id=m["appointment_type_id"],
        start_at=m["start_at"],
        end_at=m["end_at"],
        status=AppointmentStatus(m["status"]),
        confirmation=Confirmation(m["confirmation"]),
        rescheduled_from_id=m["rescheduled_from_id"],
        rescheduled_to_id=m["rescheduled_to_id"],
        cancel_reason=m["cancel_reason"],
        version=m["version"],
    )


def _entry(m: Any) -> WaitlistEntry:
    return WaitlistEntry(
        id=m["id"],
        org_id=m["org_id"],
        patient_id=m["patient_id"],
        location_id=m["location_id"],
        appointment_type_id=m["appointment_type_id"],
        earliest_date=m["earliest_date"],
        latest_date=m["latest_date"],
        created_at=m["created_at"],
        provider_id=m["provider_id"],
        weekdays=None if m["weekdays"] is None else tuple(m["weekdays"]),
        parts_of_day=(
            None if m["parts_of_day"] is None else tuple(PartOfDay(p) for p in m["parts_of_day"])
        ),
        appointment_id=m["appointment_id"],
        status=EntryStatus(m["status"]),
        booked_appointment_id=m["booked_appointment_id"],
        position=m["position"],
    )


def _slot(m: Any) -> FreedSlot:
    return FreedSlot(
        id=m["id"],
        org_id=m["org_id"],
        provider_id=m["provider_id"],
        location_id=m["location_id"],
        appointment_type_id=m["appointment_type_id"],
        start_at=m["start_at"],
        end_at=m["end_at"],
        source_appointment_id=m["source_appointment_id"],
        source_patient_id=m["source_patient_id"],
        created_at=m["created_at"],
        status=SlotStatus(m["status"]),
        round=m["round"],
        filled_by_entry_id=m["filled_by_entry_id"],
        appointment_id=m["appointment_id"],
    )


def _waitlist_offer(m: Any) -> WaitlistOffer:
    return WaitlistOffer(
        id=m["id"],
        org_id=m["org_id"],
        slot_id=m["slot_id"],
        entry_id=m["entry_id"],
        patient_id=m["patient_id"],
        round=m["round"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        status=WaitlistOfferStatus(m["status"]),
    )
