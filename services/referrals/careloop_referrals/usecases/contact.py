"""Asking the patient to book: an inbound referral that enters `patient contacted`
publishes `ReferralContactRequested`, and messaging texts or emails the patient a
PHI-free note with a secure link (the reason, the specialty and the receiving provider
never leave this service). Each entry into the stage asks once (the contact key names
the referral's version), so a visit cancelled or missed, which sends the referral back
here, asks again.

A location identity has not announced yet (its event is still on the way) is treated
as sensitive: the message then names no practice, which is never wrong, only plainer.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.referrals import ReferralContactRequested
from careloop_kit.service import Runtime
from careloop_referrals.domain.referral import Direction, Referral
from careloop_referrals.store.locations import LocationInfo, LocationViewRepository
from careloop_referrals.usecases.events import event_fields, routing

log = logging.getLogger(__name__)

UNKNOWN_LOCATION = LocationInfo(name="", time_zone="UTC", sensitive=True)


def contact_key(referral: Referral) -> str:
    """One message per entry into the stage."""
    return f"{referral.id}:contact:v{referral.version}"


async def request_contact(
    runtime: Runtime, session: AsyncSession, referral: Referral, *, respond_by: datetime
) -> None:
    """Ask messaging to reach the patient of an inbound referral, in the caller's
    transaction; the link lapses at `respond_by` (the stage's escalation)."""
    if referral.direction is not Direction.INBOUND:
        return  # the outside specialist books an outbound referral's patient
    found = await LocationViewRepository(session).get(referral.org_id, referral.location_id)
    location = found or UNKNOWN_LOCATION
    if found is None:
        log.warning(
            "referral %s: location %s not in the view yet, the contact names no practice",
            referral.id,
            referral.location_id,
        )
    await runtime.outbox.add(
        session,
        ReferralContactRequested(
            **event_fields(referral, referral.stage_entered_at),
            contact_key=contact_key(referral),
            practice_name=location.name,
            sensitive_location=location.sensitive,
            location_time_zone=location.time_zone,
            respond_by=respond_by,
        ),
        **routing(referral),
    )
