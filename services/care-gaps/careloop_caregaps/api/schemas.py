"""Request and response bodies of the care-gaps API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from careloop_contracts.caregaps import GapStatusName
from careloop_kit.api_types import IdStr

Reason = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecisionCreate(_In):
    reason: Reason = Field(description="Why (stored encrypted: it may say anything).")


class VisitTypesUpdate(_In):
    appointment_type_ids: list[IdStr] = Field(
        max_length=100,
        description="Appointment types whose booking marks the measure's open gaps scheduled.",
    )


class EvaluationCreate(_In):
    location_id: IdStr | None = Field(
        None, description="Only patients attributed to this location; none: every patient."
    )


class GapSummary(BaseModel):
    id: str
    patient_id: str
    measure_id: str
    measure_version: str
    status: GapStatusName
    due_on: date | None
    reason: str = Field(description="A code-like reason (`no-hba1c-in-12-months`).")
    location_id: str | None
    provider_id: str | None
    version: int
    created_at: datetime
    updated_at: datetime


class Evidence(BaseModel):
    opened_by: list[str] = Field(description="Fact ids behind the finding that opened it.")
    closed_by: list[str] = Field(description="Fact ids that closed or excluded it.")


class TransitionRead(BaseModel):
    status: GapStatusName = Field(description="The status the gap took (`to_status`).")
    from_status: GapStatusName | None
    to_status: GapStatusName
    cause: str | None
    actor_id: str
    reason: str | None = Field(description="The reason given by hand, if any.")
    at: datetime


class GapRead(GapSummary):
    org_id: str
    evidence: Evidence
    evidence_fact_ids: list[str] = Field(
        description="Every fact id of the evidence, opening first, then closing."
    )
    history: list[TransitionRead]


class GapList(BaseModel):
    items: list[GapRead]


class PopulationCountRead(BaseModel):
    measure_id: str
    location_id: str | None
    provider_id: str | None
    status: GapStatusName
    count: int


class PopulationItem(BaseModel):
    patient_id: str
    gap_id: str
    measure_id: str
    status: GapStatusName
    due_on: date | None


class PopulationRead(BaseModel):
    counts: list[PopulationCountRead]
    items: list[PopulationItem]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last.")


class ValueSetRead(BaseModel):
    id: str
    title: str
    source: str = Field(description="Where the codes come from (VSAC OID, CDC CVX, ...).")
    version: str


class MeasureRead(BaseModel):
    id: str
    version: str
    title: str
    value_sets: list[ValueSetRead]
    visit_type_ids: list[str]


class MeasureList(BaseModel):
    items: list[MeasureRead]


class EvaluationAccepted(BaseModel):
    job_id: str
    status_url: str


class EvaluationRead(BaseModel):
    job_id: str
    status: str = Field(description="queued, running, done or failed.")
    location_id: str | None
    total: int
    done: int
    percent: float
    changed: int = Field(description="Gaps this run changed (0 on a run that found nothing new).")
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


class CampaignStepIn(_In):
    channel: Literal["sms", "email", "portal"] | None = Field(
        None, description="The step's channel; null: the patient's preferred one."
    )
    wait_days: int = Field(
        ge=0, le=90, description="Days the step waits for a booking before the next one."
    )


class CampaignCreate(_In):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    measure_ids: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        max_length=14, description="The measures whose open gaps the campaign reaches."
    )
    location_id: IdStr = Field(description="The patients' attributed location.")
    steps: list[CampaignStepIn] = Field(
        max_length=10, description="The channel sequence, one message per step."
    )


class CampaignCountsRead(BaseModel):
    patients_targeted: int
    steps_sent: int
    waiting: int = Field(description="Patients whose latest step waits for an answer.")
    scheduled: int = Field(description="Patients who booked.")
    closed: int = Field(description="Patients whose gap closed on evidence.")
    unanswered: int = Field(description="Patients handed to the care coordinators.")
    stopped: int


class CampaignRead(BaseModel):
    id: str
    name: str
    location_id: str
    measure_ids: list[str]
    steps: list[CampaignStepIn]
    status: Literal["draft", "launched", "stopped"]
    created_by: str
    created_at: datetime
    launched_at: datetime | None
    launched_by: str | None
    stopped_at: datetime | None
    counts: CampaignCountsRead


class CampaignList(BaseModel):
    items: list[CampaignRead]
