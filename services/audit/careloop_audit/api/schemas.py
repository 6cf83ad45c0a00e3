"""Request and response bodies of the audit API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from careloop_audit.domain.record import RecordFields
from careloop_contracts.audit import AccessRecordFields


class AuditRecordRead(AccessRecordFields):
    """One access record of the log: the fields every service published, and where
    and when the log took it in."""

    seq: int = Field(description="Position in the log (gapless, from 1).")
    event_id: str = Field(description="Id of the event that carried the record.")
    recorded_at: datetime = Field(description="When the log took the record in (UTC).")

    @classmethod
    def of(cls, fields: RecordFields) -> AuditRecordRead:
        return cls.model_validate(fields.__dict__)


class AuditRecordPage(BaseModel):
    """A page of records, newest first; pass `next_cursor` as `cursor` for the next one."""

    items: list[AuditRecordRead]
    next_cursor: int | None = None
