"""Events of the patients service (topic ``careloop.patients``, keyed by patient id)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from careloop_contracts.base import Event, Id, UtcDatetime

FieldName = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$", max_length=64)
]
"""A field name such as ``telecom.email``: the pattern keeps values from slipping in."""


class PatientRegistered(Event):
    """Emitted when a new patient record is created, whether by staff registration,
    intake, portal sign-up or EHR import. Carries ids only: read the record through
    the patients API (which audits the access) for anything else."""

    event_type = "careloop.patients.patient.registered.v1"
    topic = "careloop.patients"

    patient_id: Id = Field(description="Id of the new patient record.")
    org_id: Id = Field(description="Organization (tenant) that owns the record.")
    location_id: Id | None = Field(
        default=None, description="Location where the patient was registered, if any."
    )
    registered_at: UtcDatetime = Field(description="When the record was created (UTC).")


class PatientUpdated(Event):
    """Emitted when a committed change alters a patient record. Names the changed
    fields, never their old or new values."""

    event_type = "careloop.patients.patient.updated.v1"
    topic = "careloop.patients"

    patient_id: Id = Field(description="Id of the changed patient record.")
    org_id: Id = Field(description="Organization (tenant) that owns the record.")
    changed_fields: tuple[FieldName, ...] = Field(
        description="Names of the changed fields (e.g. `telecom.email`); no values."
    )
    version: int = Field(
        ge=1, description="Record version after the change; increases by one per change."
    )
    updated_at: UtcDatetime = Field(description="When the change was committed (UTC).")


class PatientMerged(Event):
    """Emitted when a duplicate patient record is merged into another. The merged
    record is retired; consumers re-point what they hold for it to the surviving one.
    Keyed by the merged patient id so it follows every earlier event of that record."""

    event_type = "careloop.patients.patient.merged.v1"
    topic = "careloop.patients"
    key_fields = ("merged_patient_id",)

    surviving_patient_id: Id = Field(description="Id of the record that remains.")
    merged_patient_id: Id = Field(description="Id of the record merged away (retired).")
    org_id: Id = Field(description="Organization (tenant) that owns both records.")
    merged_at: UtcDatetime = Field(description="When the merge was committed (UTC).")


FactKindName = Literal[
    "condition", "observation", "procedure", "immunization", "medication-statement", "encounter"
]
"""The clinical fact kinds, one per FHIR R4 resource: Condition, Observation, Procedure,
Immunization, MedicationStatement, Encounter."""

FactSourceName = Literal["staff-entry", "intake", "ehr-import"]
"""Where a fact came from: typed in by staff, a patient's intake form, the EHR connector."""

CodeSystemName = Literal["icd-10-cm", "snomed-ct", "loinc", "cpt", "hcpcs", "cvx", "rxnorm"]
"""The code systems facts are coded in (short names of the FHIR system URIs)."""


class FactCoding(BaseModel):
    """One code of a fact: its system and code, never its display text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    system: CodeSystemName = Field(description="Code system of the code.")
    code: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9.\-]+$")


class FactQuantity(BaseModel):
    """A measured value: a number and its UCUM unit (an observation or one component)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: FactCoding | None = Field(
        default=None, description="The component's code (e.g. LOINC 8480-6); None: the value."
    )
    value: float = Field(description="The number measured.")
    unit: str = Field(
        max_length=32, description="UCUM unit code (`%`, `mm[Hg]`, `mL/min/{1.73_m2}`)."
    )


class ClinicalFactRecorded(Event):
    """Emitted when a clinical fact is recorded or corrected (a new `version` of the same
    `fact_id`; `status` `entered-in-error` withdraws it). Carries ids, codes, dates, the
    status and, for observations, the measured numbers and units: what care-gap measures
    evaluate. Never a name, a note, free text or the display of a code; the full FHIR
    resource is read through the patients API, which audits the access. A fact sent
    twice (the same source and source id) is recorded once and published once."""

    event_type = "careloop.patients.fact.recorded.v1"
    topic = "careloop.patients"

    fact_id: Id = Field(description="Id of the fact.")
    patient_id: Id = Field(description="Id of the patient the fact is about.")
    org_id: Id = Field(description="Organization (tenant) that owns the record.")
    kind: FactKindName = Field(description="Which FHIR resource the fact is.")
    version: int = Field(ge=1, description="Fact version; a correction increases it by one.")
    status: str = Field(
        max_length=32,
        pattern=r"^[a-z][a-z-]*$",
        description=(
            "The resource's status code (`Condition.clinicalStatus`, `Observation.status`, "
            "...); `entered-in-error` withdraws the fact."
        ),
    )
    codes: tuple[FactCoding, ...] = Field(
        min_length=1, description="Every coding of the resource's code (or vaccine code)."
    )
    effective_on: date = Field(
        description="The date the fact holds from: onset, effective, performed, occurrence."
    )
    effective_until: date | None = Field(
        default=None,
        description="The date it stopped holding (abatement, period end), if it did.",
    )
    quantities: tuple[FactQuantity, ...] = Field(
        default=(), description="For observations: the value and each component's value."
    )
    source: FactSourceName = Field(description="Where the fact came from.")
    location_id: Id | None = Field(
        default=None, description="Location where it was recorded or performed, if known."
    )
    recorded_at: UtcDatetime = Field(description="When this version was committed (UTC).")
