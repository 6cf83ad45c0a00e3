"""Events of the referrals service (topic ``careloop.referrals``, keyed by patient id).

A referral's events carry ids, codes and the loop's stage, never the reason for the
referral, a packet's content or a transition's free-text reason: consumers (tasks,
patients' care relationships, analytics, partners) read what they need from the
referrals API, which audits the access.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from careloop_contracts.base import Event, Id, UtcDatetime

TOPIC = "careloop.referrals"

ReferralStageName = Literal[
    "received",
    "triaged",
    "authorization-pending",
    "authorized",
    "denied",
    "patient-contacted",
    "scheduled",
    "seen",
    "outcome-reported",
    "declined",
    "cancelled",
    "expired",
    "redirected",
]
"""The loop's stages (IHE 360X; FHIR ``Task.businessStatus``)."""

TaskStatusName = Literal[
    "received",
    "accepted",
    "on-hold",
    "ready",
    "in-progress",
    "completed",
    "rejected",
    "cancelled",
    "failed",
]
"""FHIR R4 ``Task.status`` values a referral's stage maps to."""

DirectionName = Literal["inbound", "outbound"]
UrgencyName = Literal["routine", "urgent", "stat"]


class ReferralEvent(Event):
    """The referral snapshot every referral event carries (abstract)."""

    referral_id: Id = Field(description="Id of the referral.")
    patient_id: Id = Field(description="Id of the patient referred.")
    org_id: Id = Field(description="Organization (tenant) that owns the referral.")
    location_id: Id = Field(description="Location that manages the referral.")
    direction: DirectionName = Field(
        description="`inbound` (to our specialists) or `outbound` (to an outside one)."
    )
    urgency: UrgencyName = Field(description="Routine, urgent or stat: sets the clocks.")
    stage: ReferralStageName = Field(description="Stage after the change.")
    task_status: TaskStatusName = Field(description="FHIR `Task.status` of that stage.")
    version: int = Field(ge=1, description="Referral version after the change.")
    occurred_at: UtcDatetime = Field(description="When the change was committed (UTC).")


class ReferralReceived(ReferralEvent):
    """Emitted when a referral is created: by staff, by a partner through the API, or
    from an uploaded referral packet. Its stage is `received`."""

    event_type = "careloop.referrals.referral.received.v1"
    topic = TOPIC

    referring_provider_id: Id = Field(description="Directory id of the referring provider.")
    receiving_provider_id: Id | None = Field(
        default=None, description="Directory id of the receiving provider, once known."
    )


class ReferralStageChanged(ReferralEvent):
    """Emitted when a referral moves from one stage to another, by staff, by a linked
    appointment's progress, or by its clocks (expired)."""

    event_type = "careloop.referrals.referral.stage_changed.v1"
    topic = TOPIC

    from_stage: ReferralStageName = Field(description="Stage before the change.")
    appointment_id: Id | None = Field(
        default=None, description="The linked appointment, when the referral has one."
    )


class ReferralStalled(ReferralEvent):
    """Emitted once per stage a referral stays in past its clock (the stage's
    `stall_after` for its urgency): the tasks service puts the referral on the managing
    location's worklist. Not emitted when the referral moved on in time."""

    event_type = "careloop.referrals.referral.stalled.v1"
    topic = TOPIC

    stage_entered_at: UtcDatetime = Field(description="When the referral entered the stage.")
    escalate_at: UtcDatetime = Field(
        description="When the stall escalates if the referral is still in the stage."
    )


class ReferralEscalated(ReferralEvent):
    """Emitted once per stage a stalled referral is still in at its escalation time:
    the tasks service escalates the stall's task (raises its priority, tells the
    location's coordinators)."""

    event_type = "careloop.referrals.referral.escalated.v1"
    topic = TOPIC

    stage_entered_at: UtcDatetime = Field(description="When the referral entered the stage.")


REFERRAL_LOOP_EVENTS: tuple[type[ReferralEvent], ...] = (ReferralReceived, ReferralStageChanged)
"""The events that open a referral and move it: what follows a referral's stage."""


AuthorizationStatusName = Literal["requested", "approved", "denied"]


class AuthorizationEvent(ReferralEvent):
    """A referral's snapshot with its prior authorization (abstract). The payer's name
    travels; the authorization number does not (it identifies the patient's coverage)."""

    authorization_status: AuthorizationStatusName = Field(
        description="The payer's answer as last recorded."
    )
    authorization_version: int = Field(ge=1, description="Authorization version after it.")
    payer: str = Field(description="The payer asked for the authorization.")
    approved_visits: int | None = Field(
        default=None, description="Visits the approval covers; null when the payer set none."
    )
    visits_used: int = Field(ge=0, description="Visits counted from arrived appointments.")
    expires_at: UtcDatetime | None = Field(
        default=None, description="When the approval runs out, when the payer set it."
    )


class AuthorizationRecorded(AuthorizationEvent):
    """Emitted when a request to the payer, its answer, or a used visit is recorded. When
    the answer moved the referral, a `stage_changed` event follows in the same commit."""

    event_type = "careloop.referrals.authorization.recorded.v1"
    topic = TOPIC


class AuthorizationExpiring(AuthorizationEvent):
    """Emitted once per authorization version that needs the coordinator before the
    visit: its expiry is within the configured lead (`expiry-near`), or every visit it
    approved is used (`visits-used-up`). The tasks service puts it on the worklist."""

    event_type = "careloop.referrals.authorization.expiring.v1"
    topic = TOPIC

    cause: Literal["expiry-near", "visits-used-up"] = Field(
        description="Why the authorization needs attention."
    )


class ReferralLeaked(ReferralEvent):
    """Emitted once per kind of leakage an outbound referral shows: still not scheduled
    a while after it was sent (`never-scheduled`), redirected to another provider than
    the one referred to (`scheduled-elsewhere`), or seen with no outcome back a while
    later (`no-report-back`). Each is its own follow-up on the worklist."""

    event_type = "careloop.referrals.referral.leaked.v1"
    topic = TOPIC

    leakage: Literal["never-scheduled", "scheduled-elsewhere", "no-report-back"] = Field(
        description="What kind of leakage, and so which follow-up."
    )


class ReferralContactRequested(ReferralEvent):
    """Emitted when an inbound referral enters `patient-contacted`, in the same
    transaction: messaging texts (or emails) the patient that a referral is waiting to be
    booked, with a secure link and nothing else about it. A referral that comes back to
    the stage (a cancelled or missed visit) asks again under a new `contact_key`.

    Carries what the message needs to be written without reading the referral: the
    location's display name and zone, and whether it is sensitive (the message then uses
    a neutral sender). Never the reason, the specialty or the receiving provider."""

    event_type = "careloop.referrals.referral.contact_requested.v1"
    topic = TOPIC

    contact_key: str = Field(
        max_length=200,
        description="One message per key: the referral and the version that asked.",
    )
    practice_name: str = Field(
        max_length=200, description="Display name of the location managing the referral."
    )
    sensitive_location: bool = Field(
        description="The location is sensitive: the message names no practice."
    )
    location_time_zone: str = Field(max_length=64, description="IANA zone of the location.")
    respond_by: UtcDatetime = Field(
        description="When the stage's clock escalates: the secure link lapses then."
    )
