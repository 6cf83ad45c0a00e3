"""The pure rules of clinical facts (synthetic codes and values only)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from careloop_patients.domain.facts import (
    CODE_SYSTEMS,
    ENTERED_IN_ERROR,
    SOURCE_TAG_SYSTEM,
    SYSTEM_URIS,
    UCUM,
    Coding,
    FactKind,
    FactSource,
    InvalidFact,
    Quantity,
    entered_in_error,
    extract,
    source_key,
    source_of,
    status_of,
)

LOINC, ICD, CVX = (
    "http://loinc.org",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://hl7.org/fhir/sid/cvx",
)


def coded(system: str, code: str, display: str = "synthetic") -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}]}


def ucum(value: float, code: str) -> dict[str, Any]:
    return {"value": value, "unit": code, "system": UCUM, "code": code}


def test_every_code_system_has_its_short_name_and_hcpcs_both_uris() -> None:
    assert set(CODE_SYSTEMS.values()) == {
        "icd-10-cm",
        "snomed-ct",
        "loinc",
        "cpt",
        "hcpcs",
        "cvx",
        "rxnorm",
    }
    assert CODE_SYSTEMS["urn:oid:2.16.840.1.113883.6.285"] == "hcpcs"
    assert SYSTEM_URIS["hcpcs"] == "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
    assert SYSTEM_URIS["loinc"] == LOINC


def test_a_blood_pressure_keeps_both_components_with_their_codes() -> None:
    fact = extract(
        FactKind.OBSERVATION,
        {
            "status": "final",
            "code": coded(LOINC, "85354-9"),
            "effectiveDateTime": "2026-02-03T09:30:00Z",
            "component": [
                {"code": coded(LOINC, "8480-6"), "valueQuantity": ucum(128, "mm[Hg]")},
                {"code": coded(LOINC, "8462-4"), "valueQuantity": ucum(82, "mm[Hg]")},
            ],
        },
    )
    assert fact.status == "final"
    assert fact.codes == (Coding("loinc", "85354-9"),)
    assert fact.effective_on == date(2026, 2, 3)
    assert fact.quantities == (
        Quantity(128.0, "mm[Hg]", Coding("loinc", "8480-6")),
        Quantity(82.0, "mm[Hg]", Coding("loinc", "8462-4")),
    )


def test_a_condition_takes_onset_abatement_and_clinical_status() -> None:
    fact = extract(
        FactKind.CONDITION,
        {
            "clinicalStatus": coded(
                "http://terminology.hl7.org/CodeSystem/condition-clinical", "resolved"
            ),
            "code": {
                "coding": [
                    {"system": ICD, "code": "E11.9"},
                    {"system": "http://snomed.info/sct", "code": "44054006"},
                ]
            },
            "onsetDateTime": "2020-05-01",
            "abatementDateTime": "2024-01-10",
        },
    )
    assert fact.status == "resolved"
    assert [c.system for c in fact.codes] == ["icd-10-cm", "snomed-ct"]
    assert (fact.effective_on, fact.effective_until) == (date(2020, 5, 1), date(2024, 1, 10))


@pytest.mark.parametrize(
    ("kind", "resource", "on", "until"),
    [
        (
            FactKind.PROCEDURE,
            {
                "status": "completed",
                "code": coded("http://www.ama-assn.org/go/cpt", "45378"),
                "performedPeriod": {"start": "2025-06-01", "end": "2025-06-01"},
            },
            date(2025, 6, 1),
            date(2025, 6, 1),
        ),
        (
            FactKind.IMMUNIZATION,
            {
                "status": "completed",
                "vaccineCode": coded(CVX, "140"),
                "occurrenceDateTime": "2025-10-02",
            },
            date(2025, 10, 2),
            None,
        ),
        (
            FactKind.MEDICATION_STATEMENT,
            {
                "status": "active",
                "medicationCodeableConcept": coded(
                    "http://www.nlm.nih.gov/research/umls/rxnorm", "860975"
                ),
                "effectivePeriod": {"start": "2025-01-01"},
            },
            date(2025, 1, 1),
            None,
        ),
        (
            FactKind.ENCOUNTER,
            {
                "status": "finished",
                "type": [coded("urn:oid:2.16.840.1.113883.6.285", "G0438")],
                "period": {"start": "2025-03-04T10:00:00Z", "end": "2025-03-04T10:30:00Z"},
            },
            date(2025, 3, 4),
            date(2025, 3, 4),
        ),
    ],
)
def test_each_kind_has_its_code_and_dates(
    kind: FactKind, resource: dict[str, Any], on: date, until: date | None
) -> None:
    fact = extract(kind, resource)
    assert fact.kind is kind
    assert len(fact.codes) == 1
    assert (fact.effective_on, fact.effective_until) == (on, until)


def test_a_conditions_onset_period_end_is_not_its_abatement() -> None:
    fact = extract(
        FactKind.CONDITION,
        {
            "code": coded(ICD, "J45.909"),
            "onsetPeriod": {"start": "2010-01-01", "end": "2010-06-30"},
            "abatementPeriod": {"start": "2018-01-01", "end": "2018-03-01"},
        },
    )
    assert fact.status == "unknown"
    assert (fact.effective_on, fact.effective_until) == (date(2010, 1, 1), date(2018, 3, 1))


def fields(kind: FactKind, resource: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidFact) as caught:
        extract(kind, resource)
    return [e.field for e in caught.value.errors]


def test_unknown_or_missing_systems_missing_dates_and_non_ucum_units_are_named() -> None:
    assert fields(
        FactKind.OBSERVATION,
        {
            "status": "final",
            "code": {
                "coding": [{"system": "http://example.org/local", "code": "X1"}, {"code": "Y"}]
            },
            "valueQuantity": {"value": 7, "unit": "percent"},
        },
    ) == ["code.coding.0.system", "code.coding.1.system", "effectiveDateTime", "valueQuantity"]
    assert fields(
        FactKind.IMMUNIZATION,
        {"status": "completed", "vaccineCode": coded(CVX, "140"), "occurrenceDateTime": "2025"},
    ) == ["occurrenceDateTime"]
    assert fields(
        FactKind.CONDITION, {"code": {"text": "free text only"}, "onsetDateTime": "2020-01-01"}
    ) == ["code"]


def test_entered_in_error_is_the_status_or_a_conditions_verification() -> None:
    condition = {
        "clinicalStatus": coded(
            "http://terminology.hl7.org/CodeSystem/condition-clinical", "active"
        ),
        "code": coded(ICD, "E11.9"),
        "onsetDateTime": "2020-01-01",
    }
    marked = entered_in_error(FactKind.CONDITION, condition)
    assert status_of(FactKind.CONDITION, marked) == ENTERED_IN_ERROR
    assert "clinicalStatus" not in marked
    observation = {"status": "final"}
    assert entered_in_error(FactKind.OBSERVATION, observation)["status"] == ENTERED_IN_ERROR
    assert observation == {"status": "final"}


def test_the_source_key_and_the_claimed_source() -> None:
    assert source_key({"id": "lab-1", "identifier": [{"value": "x"}]}) == "id:lab-1"
    assert source_key({"identifier": [{"system": "urn:s", "value": "v"}]}) == "identifier:urn:s|v"
    assert source_key({}) is None
    tagged = {"meta": {"tag": [{"system": SOURCE_TAG_SYSTEM, "code": "ehr-import"}]}}
    assert source_of(tagged) is FactSource.EHR_IMPORT
    assert source_of({"meta": {"tag": [{"system": "urn:other", "code": "x"}]}}) is None
    with pytest.raises(InvalidFact):
        source_of({"meta": {"tag": [{"system": SOURCE_TAG_SYSTEM, "code": "rumour"}]}})
