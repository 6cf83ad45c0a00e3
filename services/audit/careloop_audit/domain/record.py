"""One audit record's content and its canonical form (RFC 8785), which the hashes cover."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Self

import rfc8785

from careloop_contracts.audit import AccessRecordFields


def format_instant(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds and `Z`: the one spelling the hashes see."""
    if value.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


LOG_FIELDS = ("seq", "event_id", "recorded_at")
"""What the log adds to an access record: its place, the event it came in, and when."""


@dataclass(frozen=True)
class RecordFields:
    """Every column of an audit record that the chain protects: the access record's
    fields (`careloop_contracts.audit.AccessRecordFields`) plus `LOG_FIELDS`.

    Written out rather than generated from the contract: these are the bytes the hashes
    cover, so a field joins the chain only by a change here, never as a side effect of
    a new optional field in the event (a unit test fails until the two agree).
    """

    seq: int
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
    phi_categories: tuple[str, ...]
    purpose_of_use: str
    source_service: str
    source_ip: str | None
    request_id: str | None
    query_fingerprint: str | None
    occurred_at: datetime
    recorded_at: datetime

    @classmethod
    def of(
        cls, record: AccessRecordFields, *, seq: int, event_id: str, recorded_at: datetime
    ) -> Self:
        """The log's record of one access record, at `seq`."""
        values = {name: getattr(record, name) for name in type(record).model_fields}
        values["audit_id"] = str(record.audit_id)
        values["phi_categories"] = tuple(record.phi_categories)
        return cls(seq=seq, event_id=event_id, recorded_at=recorded_at, **values)

    def as_json(self) -> dict[str, Any]:
        """The record as a JSON object (timestamps as RFC 3339 strings)."""
        data = asdict(self)
        data["phi_categories"] = list(self.phi_categories)
        data["occurred_at"] = format_instant(self.occurred_at)
        data["recorded_at"] = format_instant(self.recorded_at)
        return data


def canonical_json(fields: RecordFields) -> bytes:
    """RFC 8785 (JCS) canonical JSON of the record: same fields, same bytes, always."""
    return rfc8785.dumps(fields.as_json())
