"""Commands on the log: an access record joins the chain."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_audit.store.repository import AuditLog
from careloop_contracts import AccessRecorded


async def record_access(
    session: AsyncSession, event: AccessRecorded, *, event_id: str, recorded_at: datetime
) -> int | None:
    """Append one access record, published in event `event_id`, to the chained log.
    Returns its seq, or None when the same access (by `audit_id`) is already logged."""
    return await AuditLog(session).append(event, event_id=event_id, recorded_at=recorded_at)
