"""Accounting of disclosures, queries, FHIR export and integrity verification of the log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from careloop_audit.api.schemas import AuditRecordPage, AuditRecordRead
from careloop_audit.domain.record import RecordFields
from careloop_audit.domain.window import Window
from careloop_audit.store.checkpoints import CheckpointStore
from careloop_audit.store.repository import AuditLog
from careloop_audit.usecases import disclosures
from careloop_audit.usecases.verification import VerificationReport, run_verification
from careloop_kit.auth import AuthenticatedPrincipal, require
from careloop_kit.context import request_context
from careloop_kit.service import RuntimeDep

router = APIRouter(prefix="/audit", tags=["audit"])

MAX_PAGE = 200

IdPath = Annotated[str, Path(min_length=1, max_length=128)]
Since = Annotated[datetime | None, Query(description="Only records that occurred at or after.")]
Until = Annotated[datetime | None, Query(description="Only records that occurred before.")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
# Bounded to BIGINT: the cursor is compared with `audit_record.seq` in SQL.
Cursor = Annotated[
    int | None,
    Query(ge=1, le=2**63 - 1, description="`next_cursor` of the previous page."),
]


# Only roles holding audit:read / audit:verify in the permission table (auditor,
# org_admin with MFA), and only ever the caller's own organization (the token `org`).
ReadContext = Annotated[
    disclosures.AuditContext,
    Depends(request_context(require("audit:read", mfa=True), AuditLog)),
]
Verifier = Annotated[AuthenticatedPrincipal, Depends(require("audit:verify", mfa=True))]


def _window(
    since: Since = None, until: Until = None, limit: Limit = 50, cursor: Cursor = None
) -> Window:
    return Window(since=since, until=until, before_seq=cursor, limit=limit)


WindowDep = Annotated[Window, Depends(_window)]


def _page(rows: Sequence[RecordFields], limit: int) -> AuditRecordPage:
    records = [AuditRecordRead.of(row) for row in rows]
    cursor = records[-1].seq if len(records) == limit else None
    return AuditRecordPage(items=records, next_cursor=cursor)


@router.get("/patients/{patient_id}/trail", response_model=AuditRecordPage)
async def patient_trail(patient_id: IdPath, ctx: ReadContext, window: WindowDep) -> AuditRecordPage:
    """Accounting of disclosures: every access to one patient's data, newest first."""
    rows = await disclosures.patient_trail(ctx, patient_id, window)
    return _page(rows, window.limit)


@router.get("/events", response_model=AuditRecordPage)
async def query_events(
    ctx: ReadContext,
    window: WindowDep,
    actor_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
) -> AuditRecordPage:
    """Query the log by actor and time range, newest first."""
    rows = await disclosures.query_events(ctx, actor_id, window)
    return _page(rows, window.limit)


@router.get("/events/{audit_id}/fhir")
async def export_fhir(audit_id: IdPath, ctx: ReadContext) -> dict[str, Any]:
    """One record as a FHIR R4 AuditEvent."""
    return await disclosures.export_record(ctx, audit_id)


@router.post("/verify", response_model=VerificationReport)
async def verify_log(principal: Verifier, runtime: RuntimeDep) -> VerificationReport:
    """Verify the whole log: hash chain, gapless sequence and the latest signed checkpoint."""
    checkpoints: CheckpointStore = runtime.state["checkpoints"]
    return await run_verification(runtime.sessionmaker, checkpoints)
