"""Care relationships: an appointment or a referral at a location opens the patient's
record to the staff of that location; cancelling the appointment before it takes place,
or the referral leaving the loop before the patient was seen, closes it again.

Scheduling's appointment events (`careloop.scheduling`) reach `apply_appointment` in
the transaction of the consumer's inbox mark, so a redelivered event is a no-op. One
row per appointment: a booked or past (arrived, fulfilled, no-show) appointment opens
its row, a cancellation committed before the visit's start ends it, so a location's
access lasts while any of its appointments with the patient holds. A later kind
(referral, care gap) is another `kind` of row; `access_basis` and the kit's check
read every kind alike. A referral (`careloop.referrals`, `apply_referral`) opens its row
when it is received at its managing location and an exit from the loop (declined,
cancelled, expired, redirected: all before the visit) ends it; a referral that closed
with its outcome keeps it, as past care, like a past visit.

Opening, ending and moving a relationship (a merge hands the duplicate's to the
survivor) are audited as changes of a `CareRelationship` resource on the patient's
trail; every access a relationship opened is audited with its purpose of use
(`APPOINTMENT_RELATIONSHIP`, see `careloop_kit.auth.principal.CareRelationship`).
A record whose location identity marks sensitive is opened by no relationship: it stays
visible only to the staff of its own location.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.referrals import ReferralEvent, ReferralReceived, ReferralStageChanged
from careloop_contracts.scheduling import AppointmentEvent
from careloop_kit.audit import AuditEntry, recorder_of
from careloop_kit.auth import ALL_LOCATIONS, AuthenticatedPrincipal, Principal
from careloop_kit.auth.principal import CareRelationship, relationship_purpose
from careloop_kit.service import Runtime
from careloop_patients.store.care_relationships import (
    CareRelationshipRepository,
    StoredRelationship,
)
from careloop_patients.usecases.locations import is_sensitive

log = logging.getLogger(__name__)

RESOURCE = "CareRelationship"
APPOINTMENT = "appointment"
REFERRAL = "referral"
# The exits of a referral's loop: each leaves it before the patient was seen (a seen
# referral only closes, with the outcome reported), so each ends the relationship.
_REFERRAL_EXITS = frozenset({"declined", "cancelled", "expired", "redirected"})
# FHIR statuses of an appointment that is, or was, a reason to care for the patient.
OPENING_STATUSES = frozenset({"booked", "arrived", "fulfilled", "noshow"})
SERVICE_ACTOR = "patients"
# A merge chain longer than this is a data error, not a reason to loop.
MAX_MERGE_HOPS = 16


@dataclass(frozen=True)
class AccessBasis:
    """What the access check of one record needs: the record's location (None when
    unknown or not looked up) and the open relationships at the caller's locations."""

    location_id: str | None
    relationships: tuple[CareRelationship, ...]


def relationships(session: AsyncSession) -> CareRelationshipRepository:
    """The care-relationship repository in the caller's session."""
    return CareRelationshipRepository(session)


async def access_basis(
    session: AsyncSession, principal: AuthenticatedPrincipal, patient_id: str
) -> AccessBasis:
    """Read before the record is opened, so the audit scope carries the purpose the
    access will have. Read on every request, so an ended relationship closes access
    at the next one. Nothing is looked up for a patient account (its own record only)
    or for staff of every location (no relationship can add to that)."""
    if principal.is_patient or ALL_LOCATIONS in principal.locations:
        return AccessBasis(None, ())
    repo = relationships(session)
    link = await repo.patient_link(principal.org_id, patient_id)
    if link is None:
        return AccessBasis(None, ())
    if principal.allows_location(link.location_id):
        return AccessBasis(link.location_id, ())
    if await is_sensitive(session, principal.org_id, link.location_id):
        # A sensitive location's records stay with its own staff, whatever the caller's
        # relationships elsewhere.
        return AccessBasis(link.location_id, ())
    found = await repo.open_for(principal.org_id, patient_id, principal.locations)
    return AccessBasis(link.location_id, tuple(found))


async def apply_appointment(
    runtime: Runtime, session: AsyncSession, event: AppointmentEvent
) -> StoredRelationship | None:
    """Open or end the relationship of one appointment; the relationship changed, or
    None when nothing changed."""
    repo = relationships(session)
    patient_id = await _survivor(repo, event.org_id, event.patient_id)
    if patient_id is None:
        # Patients may hear of an appointment before the record's registration
        # commits only through a bug elsewhere; there is no record to open.
        log.warning(
            "appointment %s names patient %s, unknown in organization %s: no relationship",
            event.appointment_id,
            event.patient_id,
            event.org_id,
        )
        return None
    if event.status in OPENING_STATUSES:
        opened = await repo.open(
            org_id=event.org_id,
            patient_id=patient_id,
            location_id=event.location_id,
            kind=APPOINTMENT,
            source_id=event.appointment_id,
            now=event.occurred_at,
        )
        return await _recorded(
            runtime,
            session,
            opened,
            "create",
            "care relationship %s opened: appointment %s at %s",
            event.appointment_id,
            event.location_id,
        )
    if event.status == "cancelled":
        if not _cancelled_before_visit(event.occurred_at, event.start_at):
            # The visit's time had come: the patient was in this location's care.
            return None
        ended = await repo.end(
            event.org_id,
            APPOINTMENT,
            event.appointment_id,
            now=event.occurred_at,
            reason="cancelled",
        )
        return await _recorded(
            runtime,
            session,
            ended,
            "update",
            "care relationship %s ended: appointment %s cancelled",
            event.appointment_id,
        )
    return None


async def apply_referral(
    runtime: Runtime, session: AsyncSession, event: ReferralEvent
) -> StoredRelationship | None:
    """Open the relationship of a received referral, or end it when the referral left the
    loop before the visit; the relationship changed, or None when nothing changed."""
    repo = relationships(session)
    if isinstance(event, ReferralReceived):
        patient_id = await _survivor(repo, event.org_id, event.patient_id)
        if patient_id is None:
            # A partner may refer a patient before their record is registered here;
            # the referral's own access rules still hold, and the appointment booked
            # for it will open the record to the location.
            log.warning(
                "referral %s names patient %s, unknown in organization %s: no relationship",
                event.referral_id,
                event.patient_id,
                event.org_id,
            )
            return None
        opened = await repo.open(
            org_id=event.org_id,
            patient_id=patient_id,
            location_id=event.location_id,
            kind=REFERRAL,
            source_id=event.referral_id,
            now=event.occurred_at,
        )
        return await _recorded(
            runtime,
            session,
            opened,
            "create",
            "care relationship %s opened: referral %s at %s",
            event.referral_id,
            event.location_id,
        )
    if isinstance(event, ReferralStageChanged) and event.stage in _REFERRAL_EXITS:
        ended = await repo.end(
            event.org_id, REFERRAL, event.referral_id, now=event.occurred_at, reason=event.stage
        )
        return await _recorded(
            runtime,
            session,
            ended,
            "update",
            "care relationship %s ended: referral %s %s",
            event.referral_id,
            event.stage,
        )
    return None


async def move_to_survivor(
    runtime: Runtime,
    session: AsyncSession,
    principal: Principal,
    *,
    org_id: str,
    merged_patient_id: str,
    surviving_patient_id: str,
    request_id: str | None = None,
    source_ip: str | None = None,
) -> list[str]:
    """A merged record's relationships follow its survivor (in the merge's transaction)."""
    moved = await relationships(session).move(
        org_id, from_patient=merged_patient_id, to_patient=surviving_patient_id
    )
    for relationship_id in moved:
        entry = AuditEntry(
            action="update",
            resource_type=RESOURCE,
            phi_categories=[],
            patient_id=surviving_patient_id,
            resource_id=relationship_id,
            extra_patient_ids=[merged_patient_id],
        )
        await recorder_of(runtime).record(
            session, principal, entry, request_id=request_id, source_ip=source_ip
        )
    return moved


def _cancelled_before_visit(cancelled_at: datetime, start_at: datetime) -> bool:
    return cancelled_at < start_at


async def _survivor(repo: CareRelationshipRepository, org_id: str, patient_id: str) -> str | None:
    """The record an appointment's patient id leads to: itself, or the survivor of its
    merge (scheduling may still book under a merged id)."""
    current = patient_id
    for _ in range(MAX_MERGE_HOPS):
        link = await repo.patient_link(org_id, current)
        if link is None:
            return None
        if link.merged_into_id is None:
            return link.id
        current = link.merged_into_id
    log.error("patient %s: merge chain longer than %d hops", patient_id, MAX_MERGE_HOPS)
    return None


async def _recorded(
    runtime: Runtime,
    session: AsyncSession,
    changed: StoredRelationship | None,
    action: str,
    message: str,
    *args: object,
) -> StoredRelationship | None:
    """`changed` (None: nothing changed), audited as `action` and logged as `message`
    with its id and `args`."""
    if changed is not None:
        await _audit(runtime, session, changed, action)
        log.info(message, changed.id, *args)
    return changed


async def _audit(
    runtime: Runtime, session: AsyncSession, relationship: StoredRelationship, action: str
) -> None:
    """The opening or end of a relationship on the patient's trail: no PHI is touched,
    so no category is named; the purpose is the one its accesses will carry."""
    system = Principal(
        actor_id=SERVICE_ACTOR,
        actor_type="system",
        org_id=relationship.org_id,
        purpose_of_use=relationship_purpose(relationship.kind),
    )
    entry = AuditEntry(
        action=action,
        resource_type=RESOURCE,
        phi_categories=[],
        patient_id=relationship.patient_id,
        resource_id=relationship.id,
    )
    await recorder_of(runtime).record(session, system, entry)
