"""Clinical facts of a patient as FHIR resources: record one, read one, list them as a
searchset `Bundle`, withdraw one (entered-in-error).

Bodies are parsed with `fhir.resources.R4B`: FHIR 4.3, whose six resources here are
R4-compatible (4.0.1 clients' JSON parses unchanged), so the FHIR API issue can reuse
them; the top-level `fhir.resources` package is R5. FHIR's own validation errors become
a 422 naming each field by its path in the body.
"""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, status
from fastapi.responses import JSONResponse
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.immunization import Immunization
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.procedure import Procedure
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.auth import require
from careloop_kit.context import RequestContext, request_context
from careloop_patients.domain.facts import (
    KIND_OF_RESOURCE,
    RESOURCE_TYPES,
    SOURCE_TAG_SYSTEM,
    FactKind,
    FieldError,
)
from careloop_patients.store.facts import StoredFact
from careloop_patients.usecases import facts as steps
from careloop_patients.usecases.patients import READ, UPDATE

router = APIRouter(prefix="/patients", tags=["clinical facts"])

Context = RequestContext[None]
FHIR_JSON = "application/fhir+json"


class FhirResponse(JSONResponse):
    """FHIR JSON, declared as such in the OpenAPI document so clients and the contract
    tests know what comes back."""

    media_type = FHIR_JSON


MODELS: dict[FactKind, Any] = {
    FactKind.CONDITION: Condition,
    FactKind.OBSERVATION: Observation,
    FactKind.PROCEDURE: Procedure,
    FactKind.IMMUNIZATION: Immunization,
    FactKind.MEDICATION_STATEMENT: MedicationStatement,
    FactKind.ENCOUNTER: Encounter,
}


def _no_repositories(session: AsyncSession) -> None:
    return None


Reader = Annotated[Context, Depends(request_context(require(READ, mfa=True), _no_repositories))]
Updater = Annotated[Context, Depends(request_context(require(UPDATE, mfa=True), _no_repositories))]

RESOURCE_EXAMPLE = {
    "resourceType": "Observation",
    "identifier": [{"system": "urn:example:lab", "value": "synthetic-1"}],
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
    "effectiveDateTime": "2026-03-01",
    "valueQuantity": {
        "value": 7.1,
        "unit": "%",
        "system": "http://unitsofmeasure.org",
        "code": "%",
    },
}


def parse(body: Any) -> tuple[FactKind, dict[str, Any]]:
    """The fact kind and the resource's JSON, validated by its FHIR model."""
    if not isinstance(body, dict):
        raise steps.invalid([FieldError("", "The body must be one FHIR resource (a JSON object).")])
    kind = KIND_OF_RESOURCE.get(str(body.get("resourceType")))
    if kind is None:
        names = ", ".join(RESOURCE_TYPES.values())
        raise steps.invalid([FieldError("resourceType", f"Must be one of: {names}.")])
    try:
        model = MODELS[kind].model_validate(body)
    except ValidationError as exc:
        raise steps.invalid(
            [
                FieldError(".".join(str(p) for p in err["loc"]), err["msg"], err["type"])
                for err in exc.errors()
            ]
        ) from exc
    resource: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)
    return kind, resource


def as_resource(stored: StoredFact) -> dict[str, Any]:
    """The stored resource as the fact: its id, version and source."""
    updated = stored.updated_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {
        "resourceType": RESOURCE_TYPES[stored.kind],
        "id": stored.id,
        "meta": {
            "versionId": str(stored.version),
            "lastUpdated": updated,
            "tag": [{"system": SOURCE_TAG_SYSTEM, "code": stored.source.value}],
        },
        **{k: v for k, v in stored.resource.items() if k != "resourceType"},
    }


def _fhir(content: dict[str, Any], status_code: int = 200) -> FhirResponse:
    return FhirResponse(content, status_code=status_code)


@router.post(
    "/{patient_id}/facts",
    status_code=status.HTTP_201_CREATED,
    response_class=FhirResponse,
    responses={200: {"description": "The fact was already held or is now its next version."}},
)
async def record_fact(
    patient_id: str,
    ctx: Updater,
    body: Annotated[dict[str, Any], Body(examples=[RESOURCE_EXAMPLE])],
) -> FhirResponse:
    """Record one FHIR R4 resource (Condition, Observation, Procedure, Immunization,
    MedicationStatement, Encounter) as a clinical fact of the patient: 201 when new, 200
    when the source's id was already held (unchanged, or now its next version)."""
    kind, resource = parse(body)
    recorded = await steps.record_fact(
        ctx.runtime, ctx.session, ctx.caller, patient_id, kind=kind, resource=resource
    )
    return _fhir(as_resource(recorded.fact), 201 if recorded.created else 200)


@router.get("/{patient_id}/facts", response_class=FhirResponse)
async def list_facts(
    patient_id: str,
    ctx: Reader,
    kind: Annotated[FactKind | None, Query(description="Only facts of this kind.")] = None,
) -> FhirResponse:
    """The patient's clinical facts as a FHIR searchset Bundle, oldest first."""
    found = await steps.list_facts(ctx.runtime, ctx.session, ctx.caller, patient_id, kind=kind)
    return _fhir(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": [
                {
                    "fullUrl": f"{RESOURCE_TYPES[f.kind]}/{f.id}",
                    "resource": as_resource(f),
                    "search": {"mode": "match"},
                }
                for f in found
            ],
        }
    )


@router.get("/{patient_id}/facts/{fact_id}", response_class=FhirResponse)
async def read_fact(patient_id: str, fact_id: str, ctx: Reader) -> FhirResponse:
    """One clinical fact, as its FHIR resource."""
    found = await steps.read_fact(ctx.runtime, ctx.session, ctx.caller, patient_id, fact_id)
    return _fhir(as_resource(found))


@router.post("/{patient_id}/facts/{fact_id}/entered-in-error", response_class=FhirResponse)
async def mark_entered_in_error(patient_id: str, fact_id: str, ctx: Updater) -> FhirResponse:
    """Withdraw a fact recorded in error: its next version, status entered-in-error."""
    stored = await steps.mark_entered_in_error(
        ctx.runtime, ctx.session, ctx.caller, patient_id, fact_id
    )
    return _fhir(as_resource(stored))
