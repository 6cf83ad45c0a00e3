"""Accounting of disclosures, queries, FHIR export and integrity verification of the log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from careloop_audit.api.schemas import AuditRecordPage, AuditRecordRead
from careloop_audit.domain.fhir import to_audit_event
from careloop_audit.store.checkpoints import CheckpointStore
from careloop_audit.store.repository import AuditLog
from careloop_audit.verification import VerificationReport, run_verification
from careloop_kit.audit import (
    AuditEntry,
    fingerprint_query,
    recorder_of,
    request_meta,
)
from careloop_kit.auth import AuthenticatedPrincipal, require
from careloop_kit.problems import NotFound, ProblemError
from careloop_kit.service import RuntimeDep, SessionDep

router = APIRouter(prefix="/audit", tags=["audit"])

# Reading the trail is itself an access to PHI (who looked at whose record), so it is
# audited like any other read, and lands in this very log.
RESOURCE = "AuditEvent"
CATEGORIES = ["access_history"]
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


class InvalidTimeRange(ProblemError):
    status, title, slug = 422, "Invalid time range", "invalid-time-range"


def _check_range(since: datetime | None, until: datetime | None) -> None:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidTimeRange(f"`{name}` needs a UTC offset, e.g. 2030-01-01T00:00:00Z.")
    if since is not None and until is not None and since >= until:
        raise InvalidTimeRange("`since` must be earlier than `until`.")


def _page(records: list[AuditRecordRead], limit: int) -> AuditRecordPage:
    cursor = records[-1].seq if len(records) == limit else None
    return AuditRecordPage(items=records, next_cursor=cursor)


@router.get("/patients/{patient_id}/trail", response_model=AuditRecordPage)
async def patient_trail(
    patient_id: IdPath,
    request: Request,
    principal: Reader,
    runtime: RuntimeDep,
    session: SessionDep,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> AuditRecordPage:
    """Accounting of disclosures: every access to one patient's data, newest first."""
    entry = AuditEntry(
        action="read", resource_type=RESOURCE, phi_categories=CATEGORIES, patient_id=patient_id
    )
    async with recorder_of(runtime).scope(session, principal, entry, **request_meta(request)):
        _check_range(since, until)
        rows = await AuditLog(session).page(
            principal.org_id,
            patient_id=patient_id,
            since=since,
            until=until,
            before_seq=cursor,
            limit=limit,
        )
    return _page([AuditRecordRead.of(r) for r in rows], limit)


@router.get("/events", response_model=AuditRecordPage)
async def query_events(
    request: Request,
    principal: Reader,
    runtime: RuntimeDep,
    session: SessionDep,
    actor_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> AuditRecordPage:
    """Query the log by actor and time range, newest first."""
    used = [
        name
        for name, value in (("actor_id", actor_id), ("since", since), ("until", until))
        if value is not None
    ]
    entry = AuditEntry(
        action="query",
        resource_type=RESOURCE,
        phi_categories=CATEGORIES,
        query_fingerprint=fingerprint_query(used),
    )
    async with recorder_of(runtime).scope(session, principal, entry, **request_meta(request)):
        _check_range(since, until)
        rows = await AuditLog(session).page(
            principal.org_id,
            actor_id=actor_id,
            since=since,
            until=until,
            before_seq=cursor,
            limit=limit,
        )
    return _page([AuditRecordRead.of(r) for r in rows], limit)


@router.get("/events/{audit_id}/fhir")
async def export_fhir(
    audit_id: IdPath,
    request: Request,
    principal: Reader,
    runtime: RuntimeDep,
    session: SessionDep,
) -> dict[str, Any]:
    """One record as a FHIR R4 AuditEvent."""
    entry = AuditEntry(
        action="export", resource_type=RESOURCE, phi_categories=CATEGORIES, resource_id=audit_id
    )
    async with recorder_of(runtime).scope(session, principal, entry, **request_meta(request)):
        fields = await AuditLog(session).get(principal.org_id, audit_id)
        if fields is None:
            raise NotFound(f"No audit record {audit_id} in this organization.")
        entry.patient_id = fields.patient_id
    return to_audit_event(fields)


@router.post("/verify", response_model=VerificationReport)
async def verify_log(principal: Verifier, runtime: RuntimeDep) -> VerificationReport:
    """Verify the whole log: hash chain, gapless sequence and the latest signed checkpoint."""
    checkpoints: CheckpointStore = runtime.state["checkpoints"]
    return await run_verification(runtime.sessionmaker, checkpoints)
