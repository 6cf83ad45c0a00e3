"""Clinical facts: conditions, observations, procedures, immunizations, medication
statements and encounters, each one FHIR resource, reduced to what care-gap measures
evaluate (kind, status, codes, dates, quantities).

Pure: works on the JSON form of a resource that the API edge has already validated
against its FHIR model, so the rules here are Careloop's (which code systems, full dates,
UCUM units), not FHIR's structure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any


class FactKind(StrEnum):
    CONDITION = "condition"
    OBSERVATION = "observation"
    PROCEDURE = "procedure"
    IMMUNIZATION = "immunization"
    MEDICATION_STATEMENT = "medication-statement"
    ENCOUNTER = "encounter"


class FactSource(StrEnum):
    STAFF_ENTRY = "staff-entry"
    INTAKE = "intake"
    EHR_IMPORT = "ehr-import"


RESOURCE_TYPES: Mapping[FactKind, str] = {
    FactKind.CONDITION: "Condition",
    FactKind.OBSERVATION: "Observation",
    FactKind.PROCEDURE: "Procedure",
    FactKind.IMMUNIZATION: "Immunization",
    FactKind.MEDICATION_STATEMENT: "MedicationStatement",
    FactKind.ENCOUNTER: "Encounter",
}
KIND_OF_RESOURCE: Mapping[str, FactKind] = {v: k for k, v in RESOURCE_TYPES.items()}

# FHIR system URI -> the short name events carry (contracts' CodeSystemName).
CODE_SYSTEMS: Mapping[str, str] = {
    "http://hl7.org/fhir/sid/icd-10-cm": "icd-10-cm",
    "http://snomed.info/sct": "snomed-ct",
    "http://loinc.org": "loinc",
    "http://www.ama-assn.org/go/cpt": "cpt",
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": "hcpcs",
    # HCPCS' OID form, as some EHR exports write it.
    "urn:oid:2.16.840.1.113883.6.285": "hcpcs",
    "http://hl7.org/fhir/sid/cvx": "cvx",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "rxnorm",
}
# Short name -> the canonical URI (the first one listed for it).
SYSTEM_URIS: Mapping[str, str] = {name: uri for uri, name in reversed(list(CODE_SYSTEMS.items()))}
UCUM = "http://unitsofmeasure.org"

SOURCE_TAG_SYSTEM = "https://careloop.dev/fhir/fact-source"
ENTERED_IN_ERROR = "entered-in-error"
CONDITION_VERIFICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

# What the event contract accepts for a code and a status.
_CODE = re.compile(r"^[A-Za-z0-9.\-]{1,32}$")
_STATUS = re.compile(r"^[a-z][a-z-]{0,31}$")
_UNIT_MAX = 32


@dataclass(frozen=True)
class Coding:
    system: str
    """Short name of the code system (`loinc`, `icd-10-cm`, ...)."""
    code: str


@dataclass(frozen=True)
class Quantity:
    value: float
    unit: str
    """UCUM code of the unit."""
    code: Coding | None = None
    """The component's code; None for the observation's own value."""


@dataclass(frozen=True)
class Fact:
    kind: FactKind
    status: str
    codes: tuple[Coding, ...]
    effective_on: date
    effective_until: date | None = None
    quantities: tuple[Quantity, ...] = ()


@dataclass(frozen=True)
class FieldError:
    field: str
    """Dotted path inside the resource (`code.coding.0.system`)."""
    message: str
    type: str = "value_error"


class InvalidFact(ValueError):
    """The resource is valid FHIR but not a fact Careloop can record."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = tuple(errors)


def subject_field(kind: FactKind) -> str:
    """The element naming the patient: Immunization's is `patient`."""
    return "patient" if kind is FactKind.IMMUNIZATION else "subject"


def code_field(kind: FactKind) -> str:
    return {
        FactKind.IMMUNIZATION: "vaccineCode",
        FactKind.MEDICATION_STATEMENT: "medicationCodeableConcept",
        FactKind.ENCOUNTER: "type",
    }.get(kind, "code")


def extract(kind: FactKind, resource: Mapping[str, Any]) -> Fact:
    """The normalized fact of a resource (its FHIR JSON); `InvalidFact` naming every
    field Careloop cannot take."""
    errors: list[FieldError] = []
    codes = _codes(kind, resource, errors)
    effective_on, effective_until = _dates(kind, resource, errors)
    quantities = _quantities(resource, errors) if kind is FactKind.OBSERVATION else ()
    status = status_of(kind, resource)
    if not _STATUS.match(status):
        errors.append(FieldError("status", "Status must be a FHIR status code."))
    if errors or effective_on is None:
        raise InvalidFact(errors or [FieldError("effective", "A date is required.")])
    return Fact(
        kind=kind,
        status=status,
        codes=codes,
        effective_on=effective_on,
        effective_until=effective_until,
        quantities=quantities,
    )


def status_of(kind: FactKind, resource: Mapping[str, Any]) -> str:
    """The resource's status: `status`, or for a condition its verification status when
    that withdraws it, else its clinical status."""
    if kind is FactKind.CONDITION:
        verification = _first_code(resource.get("verificationStatus"))
        if verification == ENTERED_IN_ERROR:
            return ENTERED_IN_ERROR
        return _first_code(resource.get("clinicalStatus")) or "unknown"
    status = resource.get("status")
    return status if isinstance(status, str) else "unknown"


def entered_in_error(kind: FactKind, resource: Mapping[str, Any]) -> dict[str, Any]:
    """The resource marked entered-in-error, the way its FHIR type says it."""
    marked = dict(resource)
    if kind is FactKind.CONDITION:
        marked["verificationStatus"] = {
            "coding": [{"system": CONDITION_VERIFICATION_SYSTEM, "code": ENTERED_IN_ERROR}]
        }
        # R4 forbids a clinical status on a condition entered in error (con-5).
        marked.pop("clinicalStatus", None)
    else:
        marked["status"] = ENTERED_IN_ERROR
    return marked


def source_of(resource: Mapping[str, Any]) -> FactSource | None:
    """The source a resource claims in `meta.tag` (system `SOURCE_TAG_SYSTEM`), if any;
    `InvalidFact` for a code that is not a source."""
    meta = resource.get("meta") or {}
    for i, tag in enumerate(meta.get("tag") or ()):
        if tag.get("system") == SOURCE_TAG_SYSTEM:
            try:
                return FactSource(tag.get("code"))
            except ValueError:
                raise InvalidFact(
                    [
                        FieldError(
                            f"meta.tag.{i}.code",
                            "Source must be one of: " + ", ".join(s.value for s in FactSource),
                        )
                    ]
                ) from None
    return None


def source_key(resource: Mapping[str, Any]) -> str | None:
    """What identifies the resource at its source: its `id`, else its first identifier's
    `system|value`; None when it has neither (every such post is a new fact)."""
    resource_id = resource.get("id")
    if isinstance(resource_id, str) and resource_id:
        return f"id:{resource_id}"
    for identifier in resource.get("identifier") or ():
        value = identifier.get("value")
        if value:
            return f"identifier:{identifier.get('system') or ''}|{value}"
    return None


# --- internals ------------------------------------------------------------------


def _first_code(concept: Any) -> str | None:
    for coding in (concept or {}).get("coding") or ():
        if coding.get("code"):
            return str(coding["code"])
    return None


def _concepts(kind: FactKind, resource: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Each coded concept of the resource, with its path."""
    name = code_field(kind)
    value = resource.get(name)
    if kind is FactKind.ENCOUNTER:
        return [(f"{name}.{i}", c) for i, c in enumerate(value or ())]
    return [] if value is None else [(name, value)]


def _coding(path: str, coding: Mapping[str, Any], errors: list[FieldError]) -> Coding | None:
    system, code = coding.get("system"), coding.get("code")
    short = CODE_SYSTEMS.get(system or "")
    if short is None:
        known = ", ".join(sorted(set(SYSTEM_URIS.values())))
        errors.append(
            FieldError(
                f"{path}.system",
                "Missing code system." if not system else f"Unknown code system; use {known}.",
            )
        )
        return None
    if not isinstance(code, str) or not _CODE.match(code):
        errors.append(FieldError(f"{path}.code", "A code of 1-32 letters, digits, '.' or '-'."))
        return None
    return Coding(short, code)


def _codes(
    kind: FactKind, resource: Mapping[str, Any], errors: list[FieldError]
) -> tuple[Coding, ...]:
    found: list[Coding] = []
    concepts = _concepts(kind, resource)
    for path, concept in concepts:
        for i, coding in enumerate(concept.get("coding") or ()):
            parsed = _coding(f"{path}.coding.{i}", coding, errors)
            if parsed is not None and parsed not in found:
                found.append(parsed)
    if not found and not any(e.field.startswith(code_field(kind)) for e in errors):
        errors.append(
            FieldError(code_field(kind), "At least one coding in a known code system is required.")
        )
    return tuple(found)


def _as_date(value: Any) -> date | str | None:
    """A full date from a FHIR date/dateTime string; the string back when partial."""
    if not isinstance(value, str):
        return None
    if len(value) >= 10:
        try:
            if len(value) == 10:
                return date.fromisoformat(value)
            return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
        except ValueError:
            return value
    return value


# kind -> (its date elements in order of preference, its period element, the element
# of a condition's end).
_DATE_FIELDS: Mapping[FactKind, tuple[tuple[str, ...], str | None, str | None]] = {
    FactKind.CONDITION: (("onsetDateTime", "recordedDate"), "onsetPeriod", "abatementDateTime"),
    FactKind.OBSERVATION: (("effectiveDateTime", "effectiveInstant"), "effectivePeriod", None),
    FactKind.PROCEDURE: (("performedDateTime",), "performedPeriod", None),
    FactKind.IMMUNIZATION: (("occurrenceDateTime",), None, None),
    FactKind.MEDICATION_STATEMENT: (("effectiveDateTime",), "effectivePeriod", None),
    FactKind.ENCOUNTER: ((), "period", None),
}


def _dates(
    kind: FactKind, resource: Mapping[str, Any], errors: list[FieldError]
) -> tuple[date | None, date | None]:
    singles, period_field, until_field = _DATE_FIELDS[kind]
    candidates: list[tuple[str, Any]] = [(f, resource.get(f)) for f in singles]
    period = resource.get(period_field) if period_field else None
    if period_field and period:
        candidates.insert(0, (f"{period_field}.start", period.get("start")))
    on: date | None = None
    for path, raw in candidates:
        if raw is None:
            continue
        parsed = _as_date(raw)
        if isinstance(parsed, date):
            on = parsed
            break
        errors.append(FieldError(path, "A full date (YYYY-MM-DD) is required."))
        return None, None
    if on is None:
        names = [*singles, *([f"{period_field}.start"] if period_field else [])]
        errors.append(FieldError(names[0], "A date is required: " + " or ".join(names) + "."))
        return None, None
    until: date | None = None
    raw_until: tuple[str, Any] | None = None
    if kind is not FactKind.CONDITION and period and period.get("end") is not None:
        raw_until = (f"{period_field}.end", period.get("end"))
    elif kind is FactKind.CONDITION:
        # The end of a condition's onset period is not its end: abatement is.
        abatement = resource.get("abatementPeriod") or {}
        if resource.get(until_field or "") is not None:
            raw_until = (until_field or "", resource.get(until_field or ""))
        elif abatement.get("end") is not None:
            raw_until = ("abatementPeriod.end", abatement.get("end"))
    if raw_until is not None:
        parsed = _as_date(raw_until[1])
        if not isinstance(parsed, date):
            errors.append(FieldError(raw_until[0], "A full date (YYYY-MM-DD) is required."))
        elif parsed < on:
            errors.append(FieldError(raw_until[0], "The end is before the start."))
        else:
            until = parsed
    return on, until


def _quantity(
    path: str, raw: Mapping[str, Any], code: Coding | None, errors: list[FieldError]
) -> Quantity | None:
    if raw.get("system") != UCUM or not raw.get("code"):
        errors.append(FieldError(path, f"A UCUM quantity is required (system {UCUM}, code)."))
        return None
    unit = str(raw["code"])
    if len(unit) > _UNIT_MAX:
        errors.append(FieldError(f"{path}.code", "A UCUM unit of at most 32 characters."))
        return None
    if raw.get("value") is None:
        errors.append(FieldError(f"{path}.value", "A value is required."))
        return None
    return Quantity(value=float(raw["value"]), unit=unit, code=code)


def _quantities(resource: Mapping[str, Any], errors: list[FieldError]) -> tuple[Quantity, ...]:
    found: list[Quantity] = []
    if resource.get("valueQuantity") is not None:
        q = _quantity("valueQuantity", resource["valueQuantity"], None, errors)
        if q is not None:
            found.append(q)
    for i, component in enumerate(resource.get("component") or ()):
        if component.get("valueQuantity") is None:
            continue
        codes = [
            c
            for j, coding in enumerate((component.get("code") or {}).get("coding") or ())
            if (c := _coding(f"component.{i}.code.coding.{j}", coding, errors)) is not None
        ]
        q = _quantity(
            f"component.{i}.valueQuantity",
            component["valueQuantity"],
            codes[0] if codes else None,
            errors,
        )
        if q is not None:
            found.append(q)
    return tuple(found)
