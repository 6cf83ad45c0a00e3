"""Events of the patients service (topic ``careloop.patients``, keyed by patient id)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

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
