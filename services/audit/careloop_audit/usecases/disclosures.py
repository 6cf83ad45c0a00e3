"""Queries on the log: accounting of disclosures, the event query and FHIR export.

Reading the trail is itself an access to PHI (who looked at whose record), so every
query here is audited like any other read, and lands in this very log.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_audit.domain.fhir import to_audit_event
from careloop_audit.domain.record import RecordFields
from careloop_audit.store.repository import AuditLog
from careloop_kit.audit import AuditEntry, fingerprint_query, recorder_of
from careloop_kit.auth.principal import AuthenticatedPrincipal
from careloop_kit.problems import NotFound, ProblemError
from careloop_kit.service import Runtime

RESOURCE = "AuditEvent"
CATEGORIES = ["access_history"]


class InvalidTimeRange(ProblemError):
    status, title, slug = 422, "Invalid time range", "invalid-time-range"


def check_range(since: datetime | None, until: datetime | None) -> None:
    """`InvalidTimeRange` unless both bounds carry an offset and `since` < `until`."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidTimeRange(f"`{name}` needs a UTC offset, e.g. 2030-01-01T00:00:00Z.")
    if since is not None and until is not None and since >= until:
        raise InvalidTimeRange("`since` must be earlier than `until`.")


async def patient_trail(
    runtime: Runtime,
    session: AsyncSession,
    principal: AuthenticatedPrincipal,
    patient_id: str,
    *,
    since: datetime | None,
    until: datetime | None,
    before_seq: int | None,
    limit: int,
    request_id: str | None = None,
    source_ip: str | None = None,
) -> Sequence[RecordFields]:
    """Every access to one patient's data in the caller's organization, newest first."""
    entry = AuditEntry(
        action="read", resource_type=RESOURCE, phi_categories=CATEGORIES, patient_id=patient_id
    )
    recorder = recorder_of(runtime)
    async with recorder.scope(
        session, principal, entry, request_id=request_id, source_ip=source_ip
    ):
        check_range(since, until)
        return await AuditLog(session).page(
            principal.org_id,
            patient_id=patient_id,
            since=since,
            until=until,
            before_seq=before_seq,
            limit=limit,
        )


async def query_events(
    runtime: Runtime,
    session: AsyncSession,
    principal: AuthenticatedPrincipal,
    *,
    actor_id: str | None,
    since: datetime | None,
    until: datetime | None,
    before_seq: int | None,
    limit: int,
    request_id: str | None = None,
    source_ip: str | None = None,
) -> Sequence[RecordFields]:
    """The caller's organization's records by actor and time range, newest first."""
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
    recorder = recorder_of(runtime)
    async with recorder.scope(
        session, principal, entry, request_id=request_id, source_ip=source_ip
    ):
        check_range(since, until)
        return await AuditLog(session).page(
            principal.org_id,
            actor_id=actor_id,
            since=since,
            until=until,
            before_seq=before_seq,
            limit=limit,
        )


async def export_record(
    runtime: Runtime,
    session: AsyncSession,
    principal: AuthenticatedPrincipal,
    audit_id: str,
    *,
    request_id: str | None = None,
    source_ip: str | None = None,
) -> dict[str, Any]:
    """One record of the caller's organization as a FHIR R4 AuditEvent, or `NotFound`."""
    entry = AuditEntry(
        action="export", resource_type=RESOURCE, phi_categories=CATEGORIES, resource_id=audit_id
    )
    recorder = recorder_of(runtime)
    async with recorder.scope(
        session, principal, entry, request_id=request_id, source_ip=source_ip
    ):
        fields = await AuditLog(session).get(principal.org_id, audit_id)
        if fields is None:
            raise NotFound(f"No audit record {audit_id} in this organization.")
        entry.patient_id = fields.patient_id
    return to_audit_event(fields)
