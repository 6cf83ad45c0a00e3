"""The catalog: providers, appointment types, weekly availability windows and closures."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Table, insert, select

from careloop_kit.repository import Repository, new_id
from careloop_kit.rows import record_of, values_of
from careloop_scheduling.domain.availability import Closure, WeeklyWindow
from careloop_scheduling.domain.catalog import (
    AppointmentType,
    ClosureReason,
    PatientKind,
    Provider,
    VisitCategory,
)
from careloop_scheduling.store.tables import (
    appointment_type,
    availability,
    availability_exception,
    provider,
)


@dataclass(frozen=True)
class StoredWindow:
    id: str
    window: WeeklyWindow


@dataclass(frozen=True)
class StoredClosure:
    id: str
    closure: Closure
    reason: ClosureReason


class CatalogRepository(Repository):
    """Providers, appointment types, availability windows and closures."""

    async def add_provider(self, item: Provider, now: datetime) -> None:
        await self._session.execute(
            insert(provider).values(**values_of(item, lists=("location_ids",)), created_at=now)
        )

    async def get_provider(self, org_id: str, provider_id: str) -> Provider | None:
        row = await self._row(provider, org_id, provider_id)
        return None if row is None else _provider(row)

    async def list_providers(self, org_id: str, location_id: str | None = None) -> list[Provider]:
        query = select(provider).where(provider.c.org_id == org_id, provider.c.active)
        if location_id is not None:
            query = query.where(provider.c.location_ids.any(location_id))
        rows = (await self._session.execute(query.order_by(provider.c.display_name))).all()
        return [_provider(r._mapping) for r in rows]

    async def add_type(self, item: AppointmentType, now: datetime) -> None:
        values = values_of(item) | {
            "visit_category": item.visit_category.value,
            "patient_kind": item.patient_kind.value,
        }
        await self._session.execute(insert(appointment_type).values(**values, created_at=now))

    async def get_type(self, org_id: str, type_id: str) -> AppointmentType | None:
        row = await self._row(appointment_type, org_id, type_id)
        return None if row is None else _type(row)

    async def list_types(self, org_id: str) -> list[AppointmentType]:
        rows = (
            await self._session.execute(
                select(appointment_type)
                .where(appointment_type.c.org_id == org_id, appointment_type.c.active)
                .order_by(appointment_type.c.name)
            )
        ).all()
        return [_type(r._mapping) for r in rows]

    async def _add_row(self, table: Table, org_id: str, now: datetime, **values: Any) -> str:
        """Insert a row of `table` under a new id; returns the id."""
        row_id = new_id()
        await self._session.execute(
            insert(table).values(id=row_id, org_id=org_id, created_at=now, **values)
        )
        return row_id

    async def add_window(self, org_id: str, window: WeeklyWindow, now: datetime) -> str:
        # The columns are `start_time`/`end_time` (`end` is an SQL keyword).
        values = values_of(window, leave_out=("start", "end"))
        return await self._add_row(
            availability, org_id, now, **values, start_time=window.start, end_time=window.end
        )

    async def windows(
        self, org_id: str, location_id: str, provider_ids: Collection[str] | None = None
    ) -> list[StoredWindow]:
        query = select(availability).where(
            availability.c.org_id == org_id, availability.c.location_id == location_id
        )
        if provider_ids is not None:
            query = query.where(availability.c.provider_id.in_(list(provider_ids)))
        rows = (await self._session.execute(query.order_by(availability.c.weekday))).all()
        return [_window(r) for r in rows]

    async def provider_windows(self, org_id: str, provider_id: str) -> list[StoredWindow]:
        rows = (
            await self._session.execute(
                select(availability)
                .where(availability.c.org_id == org_id, availability.c.provider_id == provider_id)
                .order_by(availability.c.location_id, availability.c.weekday)
            )
        ).all()
        return [_window(r) for r in rows]

    async def add_closure(
        self, org_id: str, closure: Closure, reason: ClosureReason, now: datetime
    ) -> str:
        values = values_of(closure, leave_out=("first", "last"))
        return await self._add_row(
            availability_exception,
            org_id,
            now,
            **values,
            first_day=closure.first,
            last_day=closure.last,
            reason=reason.value,
        )

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


def _provider(m: Any) -> Provider:
    return record_of(Provider, m, tuples=("location_ids",))


def _type(m: Any) -> AppointmentType:
    return record_of(
        AppointmentType,
        m,
        convert={"visit_category": VisitCategory, "patient_kind": PatientKind},
    )


def _window(r: Any) -> StoredWindow:
    return StoredWindow(
        r.id, WeeklyWindow(r.provider_id, r.location_id, r.weekday, r.start_time, r.end_time)
    )
