"""Accounting of disclosures, queries, FHIR export and integrity verification of the log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from careloop_audit.api.schemas import AuditRecordPage, AuditRecordRead
from careloop_audit.domain.record import RecordFields
from careloop_audit.domain.window import Window
from careloop_audit.store.checkpoints import CheckpointStore
from careloop_audit.usecases import disclosures
from careloop_audit.usecases.verification import VerificationReport, run_verification
from careloop_kit.audit import request_meta
from careloop_kit.auth import AuthenticatedPrincipal, require
from careloop_kit.service import RuntimeDep, SessionDep

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
Reader = Annotated[AuthenticatedPrincipal, Depends(require("audit:read", mfa=True))]
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
async def patient_trail(
    patient_id: IdPath,
    request: Request,
    principal: Reader,
    runtime: RuntimeDep,
    session: SessionDep,
    window: WindowDep,
) -> AuditRecordPage:
    """Accounting of disclosures: every access to one patient's data, newest first."""
    meta = request_meta(request)
    rows = await disclosures.patient_trail(runtime, session, principal, patient_id, window, meta)
    return _page(rows, window.limit)


@router.get("/events", response_model=AuditRecordPage)
async def query_events(
    request: Request,
    principal: Reader,
    runtime: RuntimeDep,
    session: SessionDep,
    window: WindowDep,
    actor_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
) -> AuditRecordPage:
    """Query the log by actor and time range, newest first."""
    meta = request_meta(request)
    rows = await disclosures.query_events(runtime, session, principal, actor_id, window, meta)
    return _page(rows, window.limit)


@router.get("/events/{audit_id}/fhir")
async def export_fhir(
    audit_id: IdPath,
    request: Request,
    principal: Reader,
    runtime: RuntimeDep,
    session: SessionDep,
) -> dict[str, Any]:
    """One record as a FHIR R4 AuditEvent."""
    meta = request_meta(request)
    return await disclosures.export_record(runtime, session, principal, audit_id, meta)


@router.post("/verify", response_model=VerificationReport)
async def verify_log(principal: Verifier, runtime: RuntimeDep) -> VerificationReport:
    """Verify the whole log: hash chain, gapless sequence and the latest signed checkpoint."""
    checkpoints: CheckpointStore = runtime.state["checkpoints"]
    return await run_verification(runtime.sessionmaker, checkpoints)
