"""One audit record's content and its canonical form (RFC 8785), which the hashes cover."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import rfc8785


def format_instant(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds and `Z`: the one spelling the hashes see."""
    if value.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class RecordFields:
    """Every column of an audit record that the chain protects."""

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
