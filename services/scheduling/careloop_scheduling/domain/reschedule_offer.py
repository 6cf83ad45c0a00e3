"""Reschedule offers: the numbered open slots sent to a patient who replied `R`, and
what a numbered reply to them means.

Slots are held for no one: an offer only remembers what was proposed, so the numbered
reply can be mapped back to a start time. Whether that time is still free is decided
when the reply rebooks the visit (by the database's double-booking constraint).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum


class OfferStatus(StrEnum):
    OPEN = "open"
    USED = "used"
    EXPIRED = "expired"


class Refusal(StrEnum):
    """Why a numbered reply cannot rebook from this offer."""

    USED = "used"
    EXPIRED = "expired"
    OUT_OF_RANGE = "out_of_range"


@dataclass(frozen=True)
class RescheduleOffer:
    id: str
    org_id: str
    appointment_id: str
    patient_id: str
    options: tuple[datetime, ...]
    created_at: datetime
    expires_at: datetime
    status: OfferStatus = OfferStatus.OPEN


def choose(offer: RescheduleOffer, choice: int | None, now: datetime) -> datetime | Refusal:
    """The start time option `choice` (1-based) names, or why it cannot be had.

    A used offer is final (a second reply to it must not move the visit again); an
    expired one is refused even if its slots look free, since the patient saw stale
    options and should get fresh ones."""
    if offer.status is OfferStatus.USED:
        return Refusal.USED
    if offer.status is OfferStatus.EXPIRED or now >= offer.expires_at:
        return Refusal.EXPIRED
    if choice is None or not 1 <= choice <= len(offer.options):
        return Refusal.OUT_OF_RANGE
    return offer.options[choice - 1]


def used(offer: RescheduleOffer) -> RescheduleOffer:
    return replace(offer, status=OfferStatus.USED)
