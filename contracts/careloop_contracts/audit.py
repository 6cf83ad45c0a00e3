"""Audit events: access records (published by every service) and signed checkpoints."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from careloop_contracts.base import Event, Id, UtcDatetime

ActorType = Literal["user", "service", "partner", "patient", "system"]
Action = Literal["create", "read", "update", "delete", "query", "export", "merge"]
Outcome = Literal["success", "denied", "error"]
PhiCategory = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z_]*$", max_length=64)]


class AccessRecordFields(BaseModel):
    """The fields of one access record, declared once: the event below carries them,
    and the audit service's log and API read them from here."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    audit_id: UUID = Field(description="Unique id of this access record (idempotency key).")
    occurred_at: UtcDatetime = Field(description="When the access happened (UTC).")
    org_id: Id = Field(description="Organization (tenant) whose data was accessed.")
    actor_id: Id = Field(description="Who acted: the `sub` of the access token.")
    actor_type: ActorType = Field(description="Kind of actor.")
    action: Action = Field(description="What was done.")
    outcome: Outcome = Field(description="Whether the access succeeded, was denied or failed.")
    outcome_detail: str | None = Field(
        default=None, max_length=128, description="HTTP status or error code, if any."
    )
    patient_id: Id | None = Field(
        default=None, description="Patient whose data was accessed; none for a search."
    )
    resource_type: str = Field(
        pattern=r"^[A-Z][A-Za-z]*$",
        max_length=64,
        description="FHIR-style resource type accessed, e.g. `Patient`.",
    )
    resource_id: Id | None = Field(default=None, description="Id of the resource, if one.")
    phi_categories: tuple[PhiCategory, ...] = Field(
        description="Categories of PHI touched, e.g. `demographics`, `contact`."
    )
    purpose_of_use: str = Field(
        default="TREAT",
        pattern=r"^[A-Z][A-Z_]*$",
        max_length=32,
        description="HL7 PurposeOfUse code; `ETREAT` for break-glass access.",
    )
    source_service: str = Field(
        pattern=r"^[a-z][a-z-]*$", max_length=64, description="Service that served the access."
    )
    source_ip: str | None = Field(
        default=None, max_length=64, description="Client IP address of the actor, if known."
    )
    request_id: str | None = Field(
        default=None, max_length=128, description="Request id, to join with service logs."
    )
    query_fingerprint: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9_.,:+-]+$",
        max_length=256,
        description=(
            "For searches: which search keys were used (e.g. `birthdate,family`), "
            "never their values."
        ),
    )


class AccessRecorded(AccessRecordFields, Event):
    """Emitted by any service, on its own topic (`careloop.<service>`), for every read
    or change of PHI and every denied attempt, in the same transaction as the access
    (through the outbox). The audit service consumes these from every service topic
    and chains them into the tamper-evident log. Says who did what to which record,
    never the data itself. Shaped after FHIR AuditEvent."""

    event_type = "careloop.audit.access.recorded.v1"
    emitted_by_any_service = True
    key_fields = ("patient_id", "org_id")


class AuditCheckpointSigned(Event):
    """Emitted by the audit service each time it signs a checkpoint of the hash-chained
    audit log. The same checkpoint is anchored on the compacted
    `careloop.audit.checkpoints` topic. One constant key keeps checkpoints in order."""

    event_type = "careloop.audit.checkpoint.signed.v1"
    topic = "careloop.audit"
    key_fields = ()

    tree_size: int = Field(ge=0, description="Number of log entries the checkpoint covers.")
    root_hash: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 root over those entries (hex)."
    )
    signed_at: UtcDatetime = Field(description="When the checkpoint was signed (UTC).")
    key_version: int = Field(ge=1, description="Version of the Vault signing key used.")
    signature: str = Field(
        min_length=1, max_length=512, description="Signature over the checkpoint (base64)."
    )
