"""Request and response bodies of the audit API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from careloop_audit.domain.record import RecordFields


class AuditRecordRead(BaseModel):
    """One access record of the log."""

    seq: int = Field(description="Position in the log (gapless, from 1).")
    audit_id: str
    event_id: str
    org_id: str
    actor_id: str
    actor_type: str
    action: str
    outcome: str
    outcome_detail: str | None
    patient_id: str | None
    resource_type: str
    resource_id: str | None
    phi_categories: list[str]
    purpose_of_use: str
    source_service: str
    source_ip: str | None
    request_id: str | None
    query_fingerprint: str | None
    occurred_at: datetime
    recorded_at: datetime

    @classmethod
    def of(cls, fields: RecordFields) -> AuditRecordRead:
        data = fields.__dict__ | {"phi_categories": list(fields.phi_categories)}
        return cls.model_validate(data)


class AuditRecordPage(BaseModel):
    """A page of records, newest first; pass `next_cursor` as `cursor` for the next one."""

    items: list[AuditRecordRead]
    next_cursor: int | None = None
