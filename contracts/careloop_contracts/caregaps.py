"""Events of the care-gaps service (topic ``careloop.caregaps``, keyed by patient id).

A gap's events carry ids, the measure's id and version, the gap's status and its due
date, never a value, a note or the evidence itself: staff read the evidence through the
care-gaps API, which audits the access.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import Field

from careloop_contracts.base import Event, Id, UtcDatetime

TOPIC = "careloop.caregaps"

GapStatusName = Literal[
    "open",
    "outreach-sent",
    "scheduled",
    "closed",
    "excluded",
    "declined",
    "not-applicable",
]
"""A gap's lifecycle: open -> outreach-sent -> scheduled -> closed, or excluded (an
exclusion applies), declined (the patient said no) or not-applicable (no longer in the
measure's population)."""


class GapEvent(Event):
    """The gap snapshot every gap event carries (abstract)."""

    gap_id: Id = Field(description="Id of the gap.")
    patient_id: Id = Field(description="Id of the patient the gap is about.")
    org_id: Id = Field(description="Organization (tenant) that owns the gap.")
    measure_id: str = Field(max_length=64, description="The measure (`diabetes-hba1c`, ...).")
    measure_version: str = Field(max_length=32, description="Version of the measure's definition.")
    status: GapStatusName = Field(description="Status after the change.")
    due_on: date | None = Field(description="When the measure is (or was) due; None: never met.")
    location_id: Id | None = Field(description="Location the gap is attributed to, if any.")
    provider_id: Id | None = Field(description="Primary-care provider attributed, if any.")
    version: int = Field(ge=1, description="Gap version after the change.")
    occurred_at: UtcDatetime = Field(description="When the change was committed (UTC).")


class GapOpened(GapEvent):
    """Emitted when an evaluation finds a patient in a measure's population without the
    completion evidence the measure asks for (or with evidence that has run out)."""

    event_type = "careloop.caregaps.gap.opened.v1"
    topic = TOPIC


class GapStatusChanged(GapEvent):
    """Emitted on every later change of a gap's status: outreach sent, a matching visit
    booked, evidence that closes it, an exclusion, the patient declining, or the patient
    leaving the measure's population. A gap reopened by a cancelled visit changes back."""

    event_type = "careloop.caregaps.gap.status_changed.v1"
    topic = TOPIC

    previous_status: GapStatusName = Field(description="Status before the change.")
    cause: Literal[
        "outreach",
        "booked",
        "visit-cancelled",
        "evidence",
        "exclusion",
        "declined",
        "left-population",
        "reopened",
    ] = Field(description="What changed it.")


class OutreachRequested(Event):
    """Emitted when a campaign step asks messaging to contact a patient about their open
    gaps: one message per `outreach_key`, on the channel the step names (or the patient's
    preferred one), inside the contact budget and opt-outs messaging enforces. Carries no
    measure and no clinical word: the text only says it is time for a check-up at the
    practice, with a secure link."""

    event_type = "careloop.caregaps.outreach.requested.v1"
    topic = TOPIC

    outreach_key: str = Field(
        max_length=200, description="One message per key: the campaign, patient and step."
    )
    campaign_id: Id = Field(description="The campaign the step belongs to.")
    patient_id: Id = Field(description="The patient to contact.")
    org_id: Id = Field(description="Organization (tenant) of the campaign.")
    location_id: Id = Field(description="Location the patient's gaps are attributed to.")
    step: int = Field(ge=1, description="Step of the campaign's channel sequence (from 1).")
    channel: Literal["sms", "email", "portal"] | None = Field(
        description="The channel the step asks for; None: the patient's preferred channel."
    )
    practice_name: str = Field(max_length=200, description="Display name of the location.")
    sensitive_location: bool = Field(
        description="The location is sensitive: the message names no practice."
    )
    location_time_zone: str = Field(max_length=64, description="IANA zone of the location.")
    respond_by: UtcDatetime = Field(
        description="When the next step (or the coordinator's task) follows without an answer."
    )
    occurred_at: UtcDatetime = Field(description="When the step was committed (UTC).")


class OutreachUnanswered(Event):
    """Emitted when a campaign's last step went unanswered (no booking by `respond_by`):
    the care coordinators of the location should reach the patient. Tasks opens one task
    per `outreach_key`."""

    event_type = "careloop.caregaps.outreach.unanswered.v1"
    topic = TOPIC

    outreach_key: str = Field(max_length=200, description="The campaign and patient.")
    campaign_id: Id = Field(description="The campaign.")
    patient_id: Id = Field(description="The patient who did not answer.")
    org_id: Id = Field(description="Organization (tenant) of the campaign.")
    location_id: Id = Field(description="Location whose coordinators follow up.")
    open_gaps: int = Field(ge=1, description="How many of the patient's gaps are still open.")
    occurred_at: UtcDatetime = Field(description="When the campaign gave up (UTC).")
