"""Request and response bodies of the referrals API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import (
    AwareDatetime,
    Base64Bytes,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
)

from careloop_kit.api_types import IdStr
from careloop_referrals.domain.authorization import AuthorizationStatus
from careloop_referrals.domain.directory import Channel, EntryKind
from careloop_referrals.domain.outcome import ReportStatus
from careloop_referrals.domain.referral import Direction, Stage, Urgency

Reason = Annotated[str, StringConstraints(min_length=1, max_length=4000)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ReferralCreate(_In):
    location_id: IdStr = Field(description="Location that manages the referral.")
    patient_id: IdStr = Field(description="The patient referred (their Careloop id).")
    direction: Direction = Field(
        description="`inbound`: to our specialists; `outbound`: to an outside specialist."
    )
    urgency: Urgency = Field(Urgency.ROUTINE, description="Sets the stage clocks.")
    referring_provider_id: IdStr = Field(description="Directory entry of the referrer.")
    receiving_provider_id: IdStr | None = Field(
        None, description="Directory entry of the receiving provider, once known."
    )
    reason: Reason | None = Field(
        None, description="The clinical reason for the referral (stored encrypted)."
    )


class PacketDocumentIn(_In):
    content_type: Annotated[str, StringConstraints(max_length=100)] = Field(
        description="Media type: application/pdf, image/jpeg, image/png, image/tiff, "
        "text/plain or application/fhir+json."
    )
    filename: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = Field(
        None, description="The document's file name (stored encrypted: it may name the patient)."
    )
    data: Base64Bytes = Field(description="The content, base64 (as a FHIR Attachment's `data`).")


class ReferralPacketCreate(ReferralCreate):
    documents: list[PacketDocumentIn] = Field(
        min_length=1, max_length=10, description="The packet's documents (stored encrypted)."
    )


class DocumentRead(BaseModel):
    id: str
    content_type: str
    size_bytes: int
    filename: str | None = Field(description="Null when none was given, or withheld.")
    created_at: datetime


class TransitionCreate(_In):
    to: Stage = Field(description="The stage to move to.")
    reason: Reason | None = Field(
        None,
        description=(
            "Why (stored encrypted); required to leave the loop (declined, cancelled, "
            "expired, redirected) and for a denial."
        ),
    )
    appointment_id: IdStr | None = Field(
        None, description="The booked visit, when moving to `scheduled`."
    )
    version: int | None = Field(
        None,
        ge=1,
        description=(
            "The version the step was decided on; a referral changed since is refused "
            "with 409 instead of moved twice."
        ),
    )


class TransitionRead(BaseModel):
    from_stage: Stage | None
    to_stage: Stage
    actor: str
    at: datetime
    reason: str | None = Field(description="Null when withheld or none was given.")


class AuthorizationWrite(_In):
    payer: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="The payer asked (name as on the patient's coverage)."
    )
    status: AuthorizationStatus = Field(
        description=(
            "`requested` when the request goes to the payer (a triaged or denied referral "
            "moves to authorization pending), `approved` or `denied` with its answer (a "
            "pending referral moves to authorized or denied)."
        )
    )
    number: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        None, description="The payer's authorization number (stored encrypted); omit to keep it."
    )
    approved_visits: int | None = Field(
        None, ge=1, le=1000, description="Visits the approval covers (with `approved` only)."
    )
    expires_at: AwareDatetime | None = Field(
        None, description="When the approval runs out; the coordinator is reminded before."
    )
    reason: Reason | None = Field(
        None, description="Why the payer denied it (required with `denied`; stored encrypted)."
    )
    version: int | None = Field(
        None,
        ge=1,
        description=(
            "The authorization version the change was decided on; a changed one is refused "
            "with 409. Omit on the first record."
        ),
    )


class AuthorizationRead(BaseModel):
    payer: str
    status: AuthorizationStatus
    number: str | None = Field(description="Null when none was given, or withheld.")
    approved_visits: int | None
    visits_used: int = Field(description="Attended appointments linked to the referral.")
    visits_left: int | None = Field(description="Null when the payer set no count.")
    expires_at: datetime | None
    updated_at: datetime
    updated_by: str
    version: int


class OutcomeWrite(_In):
    note: Annotated[str, StringConstraints(min_length=1, max_length=20000)] = Field(
        description=(
            "The specialist's outcome note for the referring provider (stored encrypted; "
            "sent in the body of the report, never in its subject)."
        )
    )


class OutcomeRead(BaseModel):
    status: ReportStatus = Field(
        description="`pending` (on its way, retried), `sent` (loop closed) or `failed`."
    )
    channel: Channel
    note: str | None = Field(description="Null when withheld (no clinical access).")
    author: str
    written_at: datetime
    attempts: int
    sent_at: datetime | None
    last_error: str | None = Field(description="Why the last attempt failed (a reply code).")


class ClockWrite(_In):
    urgency: Urgency
    stage: Stage = Field(description="A stage that waits on someone (it has a clock).")
    stall_after_hours: float = Field(
        gt=0, le=8760, description="Hours in the stage before a stall."
    )
    escalate_after_hours: float = Field(
        gt=0, le=8760, description="Hours after the stall before it escalates."
    )


class ClockSettings(_In):
    location_id: IdStr | None = Field(
        None, description="The location whose own clocks these are; omitted: the organization's."
    )
    clocks: list[ClockWrite] = Field(
        max_length=64, description="The level's whole setting; an empty list inherits everything."
    )


class ClockRead(BaseModel):
    urgency: Urgency
    stage: Stage
    stall_after_hours: float
    escalate_after_hours: float
    source: str = Field(description="`default`, `organization` or `location`.")


class ClocksRead(BaseModel):
    location_id: str | None
    clocks: list[ClockRead]


class ReferralRead(BaseModel):
    id: str
    org_id: str
    location_id: str
    patient_id: str
    direction: Direction
    urgency: Urgency
    referring_provider_id: str
    receiving_provider_id: str | None
    stage: Stage
    task_status: str = Field(description="FHIR `Task.status` of the stage.")
    stage_entered_at: datetime
    appointment_id: str | None
    version: int
    created_at: datetime
    allowed_next: list[Stage] = Field(description="The stages the referral may move to.")
    reason: str | None = Field(description="Null when withheld (no clinical access) or none.")
    history: list[TransitionRead]
    authorization: AuthorizationRead | None = Field(
        description="The prior authorization, when one was recorded."
    )
    outcome: OutcomeRead | None = Field(description="The outcome report, once written.")
    documents: list[DocumentRead] = Field(
        default_factory=list, description="The referral packet's documents (content apart)."
    )
    withheld_categories: list[str] = Field(description="PHI categories left out for this caller.")


class ReferralSummary(_Out):
    id: str
    location_id: str
    patient_id: str
    direction: Direction
    urgency: Urgency
    stage: Stage
    stage_entered_at: datetime
    appointment_id: str | None
    version: int
    created_at: datetime


class ReferralPage(BaseModel):
    items: list[ReferralSummary]
    next_after: str | None = Field(description="Pass as `after` for the next page; null: last.")


class LoopClosureRead(BaseModel):
    group: str
    referrals: int = Field(description="Referrals created in the period (redirected left out).")
    closed: int = Field(description="Of those, outcome reported to the referring provider.")
    share_closed: float | None
    median_days_to_scheduled: float | None
    median_days_to_seen: float | None
    median_days_to_report: float | None


class LoopClosureReport(BaseModel):
    created_from: datetime
    created_to: datetime
    group_by: str
    groups: list[LoopClosureRead]


class ContactIn(_In):
    email: EmailStr | None = None
    phone: Annotated[str, StringConstraints(max_length=32)] | None = None
    fax: Annotated[str, StringConstraints(max_length=32)] | None = Field(
        None, description="Fax number in international form (+ and the country code)."
    )
    direct_address: EmailStr | None = Field(None, description="Direct secure messaging address.")
    direct_certificate: Annotated[str, StringConstraints(max_length=16384)] | None = Field(
        None,
        description=(
            "PEM X.509 certificate of `direct_address` (as the recipient's HISP publishes "
            "it): RSA of 2048 bits or more, its subjectAltName naming the address or its "
            "domain. Direct reports are encrypted to it."
        ),
    )


class ContactRead(_Out):
    email: str | None
    phone: str | None
    fax: str | None
    direct_address: str | None
    direct_certificate: str | None


class DirectoryEntryCreate(_In):
    kind: EntryKind
    npi: Annotated[str, StringConstraints(pattern=r"^\s*[0-9]{10}\s*$")] | None = Field(
        None, description="Ten-digit NPI; its check digit is verified."
    )
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    specialty: Annotated[str, StringConstraints(max_length=100)] | None = None
    contact: ContactIn = Field(default_factory=ContactIn)
    preferred_channel: Channel = Channel.SECURE_EMAIL
    internal: bool = Field(False, description="One of the practice's own providers.")


class DirectoryEntryUpdate(_In):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    specialty: Annotated[str, StringConstraints(max_length=100)] | None = None
    contact: ContactIn | None = None
    preferred_channel: Channel | None = None
    active: bool | None = None


class DirectoryEntryRead(_Out):
    id: str
    org_id: str
    kind: EntryKind
    npi: str | None
    name: str
    specialty: str | None
    contact: ContactRead
    preferred_channel: Channel
    internal: bool
    active: bool


class DirectoryPage(BaseModel):
    items: list[DirectoryEntryRead]
    next_after: str | None
