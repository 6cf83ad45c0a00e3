"""Reschedule offers sent to patients who asked for another time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, insert, select, update

from careloop_kit.repository import Repository
from careloop_kit.rows import record_of, values_of
from careloop_scheduling.domain.reschedule_offer import OfferStatus, RescheduleOffer
from careloop_scheduling.store.tables import reschedule_offer


class RescheduleOfferRepository(Repository):
    """Offers of other times sent to a patient, at most one open per appointment."""

    async def add_offer(self, offer: RescheduleOffer) -> None:
        values = values_of(offer) | {
            "options": [o.isoformat() for o in offer.options],
            "status": offer.status.value,
        }
        await self._session.execute(insert(reschedule_offer).values(**values))

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


def _times(options: list[str]) -> tuple[datetime, ...]:
    return tuple(datetime.fromisoformat(o) for o in options)


def _offer(m: Any) -> RescheduleOffer:
    return record_of(RescheduleOffer, m, convert={"options": _times, "status": OfferStatus})
