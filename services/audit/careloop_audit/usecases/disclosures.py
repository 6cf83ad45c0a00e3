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
from careloop_audit.domain.window import Window
from careloop_audit.store.repository import AuditLog
from careloop_kit.audit import AuditEntry, fingerprint_query, recorder_of
from careloop_kit.auth.principal import AuthenticatedPrincipal
from careloop_kit.problems import NotFound, ProblemError
from careloop_kit.service import Runtime

RESOURCE = "AuditEvent"
CATEGORIES = ["access_history"]

RequestMeta = dict[str, Any]
"""Where a request came from, as the audit trail records it (`request_meta`)."""


class InvalidTimeRange(ProblemError):
    status, title, slug = 422, "Invalid time range", "invalid-time-range"


def check_range(since: datetime | None, until: datetime | None) -> None:
    """`InvalidTimeRange` unless both bounds carry an offset and `since` < `until`."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidTimeRange(f"`{name}` needs a UTC offset, e.g. 2030-01-01T00:00:00Z.")
    if since is not None and until is not None and since >= until:
        raise InvalidTimeRange("`since` must be earlier than `until`.")


async def _read_page(
    runtime: Runtime,
    session: AsyncSession,
    principal: AuthenticatedPrincipal,
    entry: AuditEntry,
    window: Window,
    meta: RequestMeta,
    *,
    patient_id: str | None = None,
    actor_id: str | None = None,
) -> Sequence[RecordFields]:
    async with recorder_of(runtime).scope(session, principal, entry, **meta):
        check_range(window.since, window.until)
        return await AuditLog(session).page(
            principal.org_id, window, patient_id=patient_id, actor_id=actor_id
        )


async def patient_trail(
    runtime: Runtime,
    session: AsyncSession,
    principal: AuthenticatedPrincipal,
    patient_id: str,
    window: Window,
    meta: RequestMeta,
) -> Sequence[RecordFields]:
    """Every access to one patient's data in the caller's organization, newest first."""
    entry = AuditEntry(
        action="read", resource_type=RESOURCE, phi_categories=CATEGORIES, patient_id=patient_id
    )
    return await _read_page(runtime, session, principal, entry, window, meta, patient_id=patient_id)


async def query_events(
    runtime: Runtime,
    session: AsyncSession,
    principal: AuthenticatedPrincipal,
    actor_id: str | None,
    window: Window,
    meta: RequestMeta,
) -> Sequence[RecordFields]:
    """The caller's organization's records by actor and time range, newest first."""
    used = [
        name
        for name, value in (
            ("actor_id", actor_id),
            ("since", window.since),
            ("until", window.until),
        )
        if value is not None
    ]
    entry = AuditEntry(
        action="query",
        resource_type=RESOURCE,
        phi_categories=CATEGORIES,
        query_fingerprint=fingerprint_query(used),
    )
    return await _read_page(runtime, session, principal, entry, window, meta, actor_id=actor_id)


async def export_record(
    runtime: Runtime,
    session: AsyncSession,
    principal: AuthenticatedPrincipal,
    audit_id: str,
    meta: RequestMeta,
) -> dict[str, Any]:
    """One record of the caller's organization as a FHIR R4 AuditEvent, or `NotFound`."""
    entry = AuditEntry(
        action="export", resource_type=RESOURCE, phi_categories=CATEGORIES, resource_id=audit_id
    )
    async with recorder_of(runtime).scope(session, principal, entry, **meta):
        fields = await AuditLog(session).get(principal.org_id, audit_id)
        if fields is None:
            raise NotFound(f"No audit record {audit_id} in this organization.")
        entry.patient_id = fields.patient_id
    return to_audit_event(fields)
