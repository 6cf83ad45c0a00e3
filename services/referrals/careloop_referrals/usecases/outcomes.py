"""The outcome report: written by the specialist once the patient was seen, delivered
to the referring provider through their preferred channel, and the loop closed when the
channel accepts it.

Delivery runs on a durable timer, outside the request: the note is committed first, so
a relay that is down loses nothing. Each attempt is committed with its result; a
transient refusal schedules the next attempt with a doubling delay, up to
`report_max_attempts`, then the report is failed and the `seen` stage's clock (stalled,
escalated) brings it to a person. The report's key is its Message-ID, so the rare
attempt that was accepted but not committed (a crash between the two) reaches the
receiving system as the same message again.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.audit import AuditEntry, recorder_of
from careloop_kit.auth import Principal
from careloop_kit.auth.permissions import CLINICAL
from careloop_kit.db.timers import DueTimer
from careloop_kit.problems import Forbidden
from careloop_kit.service import Runtime
from careloop_referrals.domain.directory import Channel, missing_for
from careloop_referrals.domain.outcome import (
    Delivery,
    OutcomeRefused,
    OutcomeReport,
    ReportChannel,
    ReportStatus,
    delivered,
    recipient_of,
    render,
    write,
)
from careloop_referrals.domain.referral import Stage
from careloop_referrals.store.directory import DirectoryRepository
from careloop_referrals.store.outcomes import OutcomeRepository
from careloop_referrals.store.referrals import ReferralRepository
from careloop_referrals.usecases.clocks import timers_of
from careloop_referrals.usecases.common import OutcomeConflict, field_cipher, settings_of
from careloop_referrals.usecases.moves import take_step
from careloop_referrals.usecases.referrals import (
    RESOURCE,
    UPDATE,
    Context,
    ReferralView,
    opened_referral,
    referral_view,
    sees_clinical,
)

log = logging.getLogger(__name__)

REPORT_TIMER = "referral-outcome-report"
CHANNELS_KEY = "report_channels"
SERVICE_ACTOR = "referrals"
NOTE_TABLE, NOTE_COLUMN = "referral_outcome", "note"


def channels_of(runtime: Runtime) -> dict[Channel, ReportChannel]:
    channels: dict[Channel, ReportChannel] = runtime.state[CHANNELS_KEY]
    return channels


async def _schedule_attempt(
    runtime: Runtime, session: AsyncSession, report: OutcomeReport, *, delay: timedelta
) -> None:
    payload = {
        "org_id": report.org_id,
        "referral_id": report.referral_id,
        "written_at": report.written_at.isoformat(),
        "attempt": report.attempts + 1,
    }
    key = f"{report.referral_id}:report:{report.written_at.isoformat()}:{report.attempts + 1}"
    await timers_of(runtime).schedule(
        session, REPORT_TIMER, runtime.clock.now() + delay, payload, dedup_key=key
    )


async def write_outcome(ctx: Context, referral_id: str, note: str) -> ReferralView:
    """Write the outcome of a seen inbound referral and send it on its way (or resend a
    failed one); 409 says why when the referral takes no report now."""
    async with opened_referral(ctx, referral_id, "update") as current:
        if not sees_clinical(ctx, UPDATE):
            raise Forbidden("Writing an outcome note needs access to clinical content.")
        held = await ctx.repos.outcomes.get(current.org_id, current.id, for_update=True)
        referrer = await ctx.repos.directory.get(current.org_id, current.referring_provider_id)
        if referrer is None:  # the foreign key keeps this unreachable
            raise OutcomeConflict("The referring provider is not in the directory.")
        try:
            report = write(
                current, held, referrer, author=ctx.principal.actor_id, now=ctx.runtime.clock.now()
            )
        except OutcomeRefused as exc:
            raise OutcomeConflict(str(exc), current_stage=current.stage.value) from exc
        note_ct = await field_cipher(ctx.runtime).seal_field(
            ctx.session,
            note.strip(),
            org_id=current.org_id,
            table=NOTE_TABLE,
            column=NOTE_COLUMN,
            row_id=current.id,
        )
        await ctx.repos.outcomes.put(report, note_ct=note_ct)
        await _schedule_attempt(ctx.runtime, ctx.session, report, delay=timedelta(0))
        log.info("referral %s: outcome report written, to go by %s", current.id, report.channel)
        return await referral_view(ctx, current, UPDATE)


async def fire_report(runtime: Runtime, session: AsyncSession, timer: DueTimer) -> None:
    """One delivery attempt of an outcome report, committed with its result."""
    payload: dict[str, Any] = timer.payload
    org_id, referral_id = payload["org_id"], payload["referral_id"]
    outcomes = OutcomeRepository(session)
    report = await outcomes.get(org_id, referral_id, for_update=True)
    referral = await ReferralRepository(session).get(org_id, referral_id, for_update=True)
    if report is None or referral is None or report.status is not ReportStatus.PENDING:
        return
    written_at = datetime.fromisoformat(payload["written_at"])
    if report.written_at != written_at or referral.stage is not Stage.SEEN:
        return  # a resend has its own attempts, or someone closed the loop by hand
    referrer = await DirectoryRepository(session).get(org_id, referral.referring_provider_id)
    channel = channels_of(runtime).get(report.channel)
    recipient = None if referrer is None else recipient_of(referrer, report.channel)
    missing = [] if referrer is None else missing_for(referrer.contact, report.channel)
    if channel is None:
        delivery = Delivery(False, error=f"this installation has no {report.channel} adapter")
    elif referrer is None or recipient is None or missing:
        # The entry changed since the report was written: a retry cannot mend that.
        fields = " and ".join(f"`{name}`" for name in missing) or "address"
        delivery = Delivery(
            False,
            error=(
                f"no {fields} for {report.channel} on the referring provider's directory "
                "entry: add it there, then write the outcome again"
            ),
        )
    else:
        blob = await outcomes.note_of(org_id, referral_id)
        assert blob is not None  # the column is NOT NULL
        note = await field_cipher(runtime).open_field(
            session, blob, org_id=org_id, table=NOTE_TABLE, column=NOTE_COLUMN, row_id=referral_id
        )
        rendered = render(
            report,
            referral,
            note,
            practice=settings_of(runtime).practice_display_name,
            seen_at=referral.stage_entered_at,
        )
        delivery = await channel.send(rendered, recipient)
    settings = settings_of(runtime)
    after = delivered(report, delivery, now=runtime.clock.now())
    if after.status is ReportStatus.PENDING and after.attempts >= settings.report_max_attempts:
        after = replace(after, status=ReportStatus.FAILED)
    await outcomes.save_delivery(after)
    if after.status is ReportStatus.SENT:
        await take_step(runtime, session, referral, Stage.CLOSED, actor=f"service:{SERVICE_ACTOR}")
        # Sending the report discloses the patient's care to the referring provider.
        system = Principal(actor_id=SERVICE_ACTOR, actor_type="system", org_id=org_id)
        entry = AuditEntry(
            action="export",
            resource_type=RESOURCE,
            phi_categories=[CLINICAL],
            patient_id=referral.patient_id,
            resource_id=referral.id,
        )
        await recorder_of(runtime).record(session, system, entry)
        log.info("referral %s: outcome report sent by %s", referral.id, report.channel)
    elif after.status is ReportStatus.PENDING:
        delay = timedelta(seconds=settings.report_retry_base_s * 2 ** (after.attempts - 1))
        await _schedule_attempt(runtime, session, after, delay=delay)
        log.warning(
            "referral %s: outcome report attempt %d failed (%s); next in %s",
            referral.id,
            after.attempts,
            after.last_error,
            delay,
        )
    else:
        log.warning(
            "referral %s: outcome report failed after %d attempts (%s)",
            referral.id,
            after.attempts,
            after.last_error,
        )
