"""One step of one referral, taken the same way by every door and every cause (a
person, a linked appointment, the payer's answer): checked by the state machine, its
reason sealed, saved against the version read, published, the stage clock restarted, an
outbound referral's leakage watched and, entering `patient contacted`, the patient asked
to book, all in the caller's transaction."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.repository import new_id
from careloop_kit.service import Runtime
from careloop_referrals.domain.referral import Referral, Stage, advance
from careloop_referrals.store.referrals import ReferralRepository
from careloop_referrals.usecases.clocks import restart_clock
from careloop_referrals.usecases.common import seal_reason
from careloop_referrals.usecases.contact import request_contact
from careloop_referrals.usecases.events import publish_stage_change
from careloop_referrals.usecases.leakage import watch_leakage


async def take_step(
    runtime: Runtime,
    session: AsyncSession,
    current: Referral,
    to: Stage,
    *,
    actor: str,
    reason: str | None = None,
    appointment_id: str | None = None,
) -> Referral:
    """The referral after the step. Raises the domain's `InvalidTransition` or
    `ReasonRequired`, or the store's `StaleReferral` when another step won."""
    moved, step = advance(
        current,
        to,
        actor=actor,
        now=runtime.clock.now(),
        reason=reason,
        appointment_id=appointment_id,
    )
    transition_id = new_id()
    reason_ct = await seal_reason(
        runtime,
        session,
        reason,
        org_id=moved.org_id,
        table="referral_transition",
        row_id=transition_id,
    )
    await ReferralRepository(session).save(
        moved,
        step,
        previous_version=current.version,
        transition_id=transition_id,
        reason_ct=reason_ct,
    )
    await publish_stage_change(runtime, session, moved, left=current)
    due = await restart_clock(runtime, session, moved, left=current)
    await watch_leakage(runtime, session, moved)
    if moved.stage is Stage.PATIENT_CONTACTED and due is not None:
        await request_contact(runtime, session, moved, respond_by=due.escalate_at)
    return moved
