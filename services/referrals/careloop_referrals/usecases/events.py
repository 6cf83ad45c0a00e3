"""What every step that changes a referral publishes, the same way from every door:
the event snapshot and its routing, and the stage change."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.referrals import ReferralStageChanged
from careloop_kit.service import Runtime
from careloop_referrals.domain.referral import FHIR_TASK_STATUS, Referral


def event_fields(r: Referral, at: datetime) -> dict[str, object]:
    """The snapshot every referral event carries."""
    return {
        "referral_id": r.id,
        "patient_id": r.patient_id,
        "org_id": r.org_id,
        "location_id": r.location_id,
        "direction": r.direction.value,
        "urgency": r.urgency.value,
        "stage": r.stage.value,
        "task_status": FHIR_TASK_STATUS[r.stage],
        "version": r.version,
        "occurred_at": at,
    }


def routing(r: Referral) -> dict[str, str]:
    """Envelope routing of a referral's events: its tenant, location and id."""
    return {"org_id": r.org_id, "location_id": r.location_id, "subject": r.id}


async def publish_stage_change(
    runtime: Runtime, session: AsyncSession, moved: Referral, *, left: Referral
) -> None:
    """`ReferralStageChanged` for a step from `left` to `moved`, in the caller's
    transaction (through the outbox)."""
    await runtime.outbox.add(
        session,
        ReferralStageChanged(
            **event_fields(moved, moved.stage_entered_at),
            from_stage=left.stage.value,
            appointment_id=moved.appointment_id,
        ),
        **routing(moved),
    )
