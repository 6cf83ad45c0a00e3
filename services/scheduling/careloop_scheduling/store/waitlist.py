"""The waitlist: entries, freed slots and the offers made of them."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from datetime import date, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from careloop_kit.repository import Repository, given, in_scope
from careloop_kit.rows import record_of, values_of
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
    waitlist_entry,
    waitlist_offer,
    waitlist_slot,
)


class WaitlistRepository(Repository):
    """Waitlist entries, the freed slots offered to them and the offers made."""

    async def add_waitlist_entry(self, entry: WaitlistEntry, now: datetime) -> WaitlistEntry:
        """Insert an entry; returns it with its waitlist position."""
        # Not booked yet, and the position comes from the table's sequence.
        values = values_of(entry, leave_out=("booked_appointment_id", "position")) | {
            "weekdays": None if entry.weekdays is None else list(entry.weekdays),
            "parts_of_day": (
                None if entry.parts_of_day is None else [p.value for p in entry.parts_of_day]
            ),
            "status": entry.status.value,
            "created_at": now,
            "updated_at": now,
        }
        position = await self._session.scalar(
            insert(waitlist_entry).values(**values).returning(waitlist_entry.c.position)
        )
        return replace(entry, position=int(position or 0), created_at=now)

    async def get_waitlist_entry(
        self, org_id: str, entry_id: str, *, for_update: bool = False
    ) -> WaitlistEntry | None:
        row = await self._row(waitlist_entry, org_id, entry_id, for_update=for_update)
        return None if row is None else _entry(row)

    async def list_waitlist_entries(
        self,
        org_id: str,
        *,
        patient_id: str | None,
        location_id: str | None,
        locations: Collection[str] | None,
        statuses: Collection[EntryStatus],
        limit: int,
        hidden_locations: Collection[str] = (),
    ) -> list[WaitlistEntry]:
        """Entries in waitlist order (first in first); none at `hidden_locations`."""
        rows = (
            await self._session.execute(
                select(waitlist_entry)
                .where(
                    waitlist_entry.c.org_id == org_id,
                    waitlist_entry.c.status.in_([s.value for s in statuses]),
                    *given(waitlist_entry, patient_id=patient_id, location_id=location_id),
                    *in_scope(waitlist_entry.c.location_id, locations, hidden_locations),
                )
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
        # A freed slot is not filled yet: `update_freed_slot` sets those columns.
        values = values_of(slot, leave_out=("filled_by_entry_id", "appointment_id")) | {
            "status": slot.status.value,
            "updated_at": slot.created_at,
        }
        inserted = await self._session.scalar(
            pg_insert(waitlist_slot)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[waitlist_slot.c.source_appointment_id])
            .returning(waitlist_slot.c.id)
        )
        return inserted is not None

    async def get_freed_slot(
        self, org_id: str, slot_id: str, *, lock: bool = False, nowait: bool = False
    ) -> FreedSlot | None:
        """The slot; `lock`: locked for a change (`nowait`: raise at once if held)."""
        row = await self._row(waitlist_slot, org_id, slot_id, for_update=lock, nowait=nowait)
        return None if row is None else _slot(row)

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
        values = values_of(offer) | {"status": offer.status.value}
        await self._session.execute(insert(waitlist_offer).values(**values))

    async def get_waitlist_offer(
        self, org_id: str, offer_id: str, *, for_update: bool = False
    ) -> WaitlistOffer | None:
        row = await self._row(waitlist_offer, org_id, offer_id, for_update=for_update)
        return None if row is None else _waitlist_offer(row)

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


def _tuple_or_none(values: list[Any] | None) -> tuple[Any, ...] | None:
    return None if values is None else tuple(values)


def _parts_of_day(values: list[str] | None) -> tuple[PartOfDay, ...] | None:
    return None if values is None else tuple(PartOfDay(p) for p in values)


def _entry(m: Any) -> WaitlistEntry:
    return record_of(
        WaitlistEntry,
        m,
        convert={
            "weekdays": _tuple_or_none,
            "parts_of_day": _parts_of_day,
            "status": EntryStatus,
        },
    )


def _slot(m: Any) -> FreedSlot:
    return record_of(FreedSlot, m, convert={"status": SlotStatus})


def _waitlist_offer(m: Any) -> WaitlistOffer:
    return record_of(WaitlistOffer, m, convert={"status": WaitlistOfferStatus})
