"""Queries on the log: accounting of disclosures, the event query and FHIR export.

Reading the trail is itself an access to PHI (who looked at whose record), so every
query here is audited like any other read, and lands in this very log.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from careloop_audit.domain.fhir import to_audit_event
from careloop_audit.domain.record import RecordFields
from careloop_audit.domain.window import Window
from careloop_audit.store.repository import AuditLog
from careloop_kit.audit import AuditEntry, fingerprint_query
from careloop_kit.context import RequestContext
from careloop_kit.problems import ProblemError

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


AuditContext = RequestContext[AuditLog]
"""A request to the log: its caller, transaction and the log on that transaction."""


async def _read_page(
    ctx: AuditContext,
    entry: AuditEntry,
    window: Window,
    *,
    patient_id: str | None = None,
    actor_id: str | None = None,
) -> Sequence[RecordFields]:
    async with ctx.audited(entry):
        check_range(window.since, window.until)
        return await ctx.repos.page(
            ctx.principal.org_id, window, patient_id=patient_id, actor_id=actor_id
        )


async def patient_trail(
    ctx: AuditContext, patient_id: str, window: Window
) -> Sequence[RecordFields]:
    """Every access to one patient's data in the caller's organization, newest first."""
    entry = AuditEntry(
        action="read", resource_type=RESOURCE, phi_categories=CATEGORIES, patient_id=patient_id
    )
    return await _read_page(ctx, entry, window, patient_id=patient_id)


async def query_events(
    ctx: AuditContext, actor_id: str | None, window: Window
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
    return await _read_page(ctx, entry, window, actor_id=actor_id)


async def export_record(ctx: AuditContext, audit_id: str) -> dict[str, Any]:
    """One record of the caller's organization as a FHIR R4 AuditEvent, or `NotFound`."""
    entry = AuditEntry(
        action="export", resource_type=RESOURCE, phi_categories=CATEGORIES, resource_id=audit_id
    )
    # The organization is the whole scope: `audit:read` reaches every record of it.
    async with ctx.opened(
        entry,
        ctx.repos.get(ctx.principal.org_id, audit_id),
        missing=f"No audit record {audit_id} in this organization.",
        patient_of=lambda record: record.patient_id,
        check=lambda record: None,
    ) as fields:
        pass
    return to_audit_event(fields)
