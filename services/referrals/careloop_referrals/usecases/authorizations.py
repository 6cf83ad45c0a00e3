"""Prior authorization: record the payer's answer (moving a referral that waits on it),
count the visits used as linked appointments are attended, and tell the coordinator
before an approval runs out (`AuthorizationExpiring`).

The reminder is a durable timer of one authorization version (its dedup key names
both): a new answer or a renewed expiry cancels the old reminder and sets its own, and a
reminder that fires for a version since replaced does nothing.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.referrals import AuthorizationExpiring, AuthorizationRecorded
from careloop_kit.db.timers import DueTimer
from careloop_kit.service import Runtime
from careloop_referrals.domain.authorization import (
    Authorization,
    AuthorizationDecision,
    AuthorizationRefused,
    AuthorizationStatus,
    count_visit,
    record,
)
from careloop_referrals.domain.referral import InvalidTransition, ReasonRequired, Referral
from careloop_referrals.store.authorizations import AuthorizationRepository, StaleAuthorization
from careloop_referrals.store.referrals import ReferralRepository, StaleReferral
from careloop_referrals.usecases.clocks import timers_of
from careloop_referrals.usecases.common import (
    AuthorizationConflict,
    InvalidReferral,
    ReferralChanged,
    TransitionRefused,
    field_cipher,
    settings_of,
)
from careloop_referrals.usecases.events import event_fields, routing
from careloop_referrals.usecases.moves import take_step
from careloop_referrals.usecases.referrals import (
    UPDATE,
    Context,
    ReferralView,
    opened_referral,
    referral_view,
)

log = logging.getLogger(__name__)

REMINDER_TIMER = "referral-authorization-expiry"
NUMBER_TABLE, NUMBER_COLUMN = "referral_authorization", "number"


def _reminder_key(authorization: Authorization) -> str:
    return f"{authorization.referral_id}:auth-v{authorization.version}:expiry"


def _event_fields(referral: Referral, authorization: Authorization) -> dict[str, object]:
    return {
        **event_fields(referral, authorization.updated_at),
        "authorization_status": authorization.status.value,
        "authorization_version": authorization.version,
        "payer": authorization.payer,
        "approved_visits": authorization.approved_visits,
        "visits_used": authorization.visits_used,
        "expires_at": authorization.expires_at,
    }


async def _published(
    runtime: Runtime,
    session: AsyncSession,
    referral: Referral,
    authorization: Authorization,
    *,
    left: Authorization | None,
) -> None:
    """`AuthorizationRecorded`, the visits-used-up notice when this change used the last
    visit, and the expiry reminder moved to this version; in the caller's transaction."""
    fields = _event_fields(referral, authorization)
    await runtime.outbox.add(session, AuthorizationRecorded(**fields), **routing(referral))
    if authorization.used_up and not (left is not None and left.used_up):
        await runtime.outbox.add(
            session, AuthorizationExpiring(**fields, cause="visits-used-up"), **routing(referral)
        )
    timers = timers_of(runtime)
    if left is not None:
        await timers.cancel(session, _reminder_key(left))
    lead = timedelta(days=settings_of(runtime).authorization_reminder_days)
    remind_at = authorization.reminder_at(lead)
    if remind_at is None:
        return
    payload = {
        "org_id": authorization.org_id,
        "referral_id": authorization.referral_id,
        "version": authorization.version,
    }
    # An approval that expires inside the lead is reminded of at once.
    due = max(remind_at, runtime.clock.now())
    await timers.schedule(
        session, REMINDER_TIMER, due, payload, dedup_key=_reminder_key(authorization)
    )


async def record_authorization(
    ctx: Context,
    referral_id: str,
    decision: AuthorizationDecision,
    *,
    number: str | None,
    reason: str | None,
    expected_version: int | None,
) -> ReferralView:
    """Record a request to the payer or its answer; the referral moves when it waits on
    it (a denial needs `reason`, like any denial). `number` None keeps the number on
    record. 409 when `expected_version` is not the authorization's version, when the
    referral's stage does not take this answer, or when another change won."""
    async with opened_referral(ctx, referral_id, "update") as current:
        repo = AuthorizationRepository(ctx.session)
        held = await repo.get(current.org_id, current.id, for_update=True)
        held_version = None if held is None else held.version
        if expected_version is not None and expected_version != held_version:
            raise AuthorizationConflict(
                f"The authorization is at version {held_version}, not {expected_version}: "
                "read the referral again.",
                current_version=held_version,
            )
        try:
            authorization, move_to = record(
                current, held, decision, actor=ctx.principal.actor_id, now=ctx.runtime.clock.now()
            )
        except AuthorizationRefused as exc:
            raise AuthorizationConflict(str(exc), current_stage=current.stage.value) from exc
        number_ct = None
        if number is not None:
            number_ct = await field_cipher(ctx.runtime).seal_field(
                ctx.session,
                number.strip(),
                org_id=current.org_id,
                table=NUMBER_TABLE,
                column=NUMBER_COLUMN,
                row_id=current.id,
            )
        try:
            await repo.save(
                authorization,
                previous_version=held_version,
                number_ct=number_ct,
                keep_number=number is None,
            )
            moved = current
            if move_to is not None:
                moved = await take_step(
                    ctx.runtime,
                    ctx.session,
                    current,
                    move_to,
                    actor=ctx.principal.actor_id,
                    reason=reason,
                )
        except InvalidTransition as exc:  # the table in the domain keeps this unreachable
            raise TransitionRefused(
                str(exc), current_stage=exc.current.value, allowed_next=sorted(exc.allowed)
            ) from exc
        except ReasonRequired as exc:
            raise InvalidReferral(str(exc)) from exc
        except (StaleAuthorization, StaleReferral) as exc:
            raise ReferralChanged(
                "Another change to this referral was saved first: read it again."
            ) from exc
        await _published(ctx.runtime, ctx.session, moved, authorization, left=held)
        log.info(
            "referral %s: authorization %s (v%d)",
            current.id,
            authorization.status,
            authorization.version,
        )
        return await referral_view(ctx, moved, UPDATE)


async def count_arrival(
    runtime: Runtime, session: AsyncSession, referral: Referral, appointment_id: str
) -> Authorization | None:
    """The linked appointment was attended: one visit used of an approved authorization
    (once per appointment, whatever redelivery happens). None when nothing counted."""
    repo = AuthorizationRepository(session)
    held = await repo.get(referral.org_id, referral.id, for_update=True)
    if held is None or held.status is not AuthorizationStatus.APPROVED:
        return None
    if not await repo.count_once(held, appointment_id, now=runtime.clock.now()):
        return None
    used = count_visit(held, now=runtime.clock.now())
    await repo.save(used, previous_version=held.version, number_ct=None, keep_number=True)
    await _published(runtime, session, referral, used, left=held)
    return used


async def fire_reminder(runtime: Runtime, session: AsyncSession, timer: DueTimer) -> None:
    """An approval is about to run out: `AuthorizationExpiring`, unless the authorization
    changed since (a renewal set its own reminder) or the referral is finished."""
    payload: dict[str, Any] = timer.payload
    held = await AuthorizationRepository(session).get(payload["org_id"], payload["referral_id"])
    referral = await ReferralRepository(session).get(payload["org_id"], payload["referral_id"])
    if held is None or referral is None or held.version != payload["version"]:
        return
    if not referral.is_open or held.status is not AuthorizationStatus.APPROVED:
        return
    fields = {**_event_fields(referral, held), "occurred_at": runtime.clock.now()}
    await runtime.outbox.add(
        session, AuthorizationExpiring(**fields, cause="expiry-near"), **routing(referral)
    )
    log.info("referral %s: authorization expires at %s", referral.id, held.expires_at)
