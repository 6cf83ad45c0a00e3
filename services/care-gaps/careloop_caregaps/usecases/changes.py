"""How a gap change is kept, whichever door made it: the row (its evidence sealed), a
transition in its history, and `GapOpened` / `GapStatusChanged` in the outbox, all in the
caller's transaction. A change of details only (due date, reason) writes the row alone.
A gap booked or closed also ends the patient's campaign outreach for it (`answers`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_caregaps.domain.gap import Change, Gap
from careloop_caregaps.store.codec import evidence_of, evidence_text
from careloop_caregaps.store.gaps import GapRepository, StoredGap
from careloop_caregaps.usecases.answers import end_outreach
from careloop_caregaps.usecases.common import field_cipher
from careloop_contracts.caregaps import GapOpened, GapStatusChanged
from careloop_kit.service import Runtime

EVIDENCE = ("care_gap", "evidence")


async def opened_gap(runtime: Runtime, session: AsyncSession, stored: StoredGap) -> Gap:
    """The stored gap with its evidence opened."""
    gap = stored.gap
    text = await field_cipher(runtime).open_field(
        session,
        stored.evidence_ct,
        org_id=gap.org_id,
        table=EVIDENCE[0],
        column=EVIDENCE[1],
        row_id=gap.id,
    )
    opened_by, closed_by = evidence_of(text)
    return replace(gap, opened_by=opened_by, closed_by=closed_by)


def _snapshot(gap: Gap, runtime: Runtime) -> dict[str, object]:
    return {
        "gap_id": gap.id,
        "patient_id": gap.patient_id,
        "org_id": gap.org_id,
        "measure_id": gap.measure_id,
        "measure_version": gap.measure_version,
        "status": gap.status,
        "due_on": gap.due_on,
        "location_id": gap.location_id,
        "provider_id": gap.provider_id,
        "version": gap.version,
        "occurred_at": runtime.clock.now(),
    }


def _routing(gap: Gap) -> dict[str, Any]:
    """Envelope routing of a gap's events: its tenant, location and id."""
    return {"org_id": gap.org_id, "location_id": gap.location_id, "subject": gap.id}


async def keep_change(
    runtime: Runtime,
    session: AsyncSession,
    change: Change,
    *,
    actor_id: str,
    reason_ct: bytes | None = None,
) -> None:
    gap = change.gap
    gaps = GapRepository(session)
    evidence_ct = await field_cipher(runtime).seal_field(
        session,
        evidence_text(gap.opened_by, gap.closed_by),
        org_id=gap.org_id,
        table=EVIDENCE[0],
        column=EVIDENCE[1],
        row_id=gap.id,
    )
    now = runtime.clock.now()
    if change.opened:
        await gaps.add(gap, evidence_ct)
        await gaps.add_transition(gap, from_status=None, cause=None, actor_id=actor_id, at=now)
        await runtime.outbox.add(session, GapOpened(**_snapshot(gap, runtime)), **_routing(gap))
        return
    await gaps.save(gap, evidence_ct, previous_version=gap.version - 1)
    if not change.status_changed or change.previous is None or change.cause is None:
        return
    await gaps.add_transition(
        gap,
        from_status=change.previous,
        cause=change.cause,
        actor_id=actor_id,
        at=now,
        reason_ct=reason_ct,
    )
    await runtime.outbox.add(
        session,
        GapStatusChanged(
            **_snapshot(gap, runtime), previous_status=change.previous, cause=change.cause
        ),
        **_routing(gap),
    )
    await end_outreach(runtime, session, gap)
