"""The evaluator's rules across measures: which facts count, results against thresholds,
population groups, order and determinism. Patients are hand-built and synthetic; the
builders here serve test_measure_boundaries.py too."""

from __future__ import annotations

from datetime import date
from functools import cache
from itertools import count

import pytest
from careloop_caregaps.domain.dates import add_months, age_in_months, season_start
from careloop_caregaps.domain.evaluator import evaluate
from careloop_caregaps.domain.facts import Coding, Fact, FactKind, PatientProfile, Quantity, Sex
from careloop_caregaps.domain.findings import Finding
from careloop_caregaps.domain.library import MeasureLibrary
from careloop_caregaps.store.library_files import load_library

pytestmark = pytest.mark.unit

AS_OF = date(2026, 6, 15)
_ids = count(1)

SYSTEMS = {
    "icd": "icd-10-cm",
    "cpt": "cpt",
    "loinc": "loinc",
    "hcpcs": "hcpcs",
    "cvx": "cvx",
    "rx": "rxnorm",
    "sct": "snomed-ct",
}
KINDS: dict[str, FactKind] = {
    "icd-10-cm": "condition",
    "cpt": "procedure",
    "hcpcs": "procedure",
    "loinc": "observation",
    "cvx": "immunization",
    "rxnorm": "medication-statement",
    "snomed-ct": "procedure",
}


@cache
def library() -> MeasureLibrary:
    return load_library()


def coding(code: str) -> Coding:
    """`icd:E11.9`, `cpt:77067`, `loinc:4548-4` ..."""
    prefix, value = code.split(":", 1)
    return Coding(SYSTEMS[prefix], value)


def fact(
    code: str,
    on: date,
    *,
    kind: FactKind | None = None,
    status: str | None = None,
    until: date | None = None,
    values: tuple[Quantity, ...] = (),
    fact_id: str | None = None,
) -> Fact:
    first = coding(code)
    kind = kind or KINDS[first.system]
    if status is None:
        status = "active" if kind in ("condition", "medication-statement") else "final"
    return Fact(
        fact_id=fact_id or f"f{next(_ids)}",
        kind=kind,
        status=status,
        codes=(first,),
        effective_on=on,
        effective_until=until,
        quantities=values,
    )


def value(amount: float, unit: str, component: str | None = None) -> Quantity:
    return Quantity(amount, unit, None if component is None else coding(component))


def born(age_years: int, on: date = AS_OF, extra_days: int = 100) -> date:
    """A birth date that makes the patient `age_years` old on `on` (not near a birthday)."""
    return date.fromordinal(add_months(on, -12 * age_years).toordinal() - extra_days)


def patient(
    *facts: Fact,
    birth: date | None = None,
    age: int | None = None,
    sex: Sex | None = "female",
    coverage: tuple[str, ...] = (),
) -> PatientProfile:
    if birth is None and age is not None:
        birth = born(age)
    return PatientProfile(f"synthetic-{next(_ids)}", birth, sex, tuple(facts), coverage)


def finding(measure_id: str, profile: PatientProfile, as_of: date = AS_OF) -> Finding:
    found = [f for f in evaluate(library(), profile, as_of) if f.measure_id == measure_id]
    assert len(found) == 1
    return found[0]


DIABETES = "icd:E11.9"
HYPERTENSION = "icd:I10"
LONG_AGO = date(2015, 1, 1)


def hba1c(percent: float, on: date, unit: str = "%") -> Fact:
    return fact("loinc:4548-4", on, values=(value(percent, unit),))


def bp_panel(systolic: float, diastolic: float, on: date) -> Fact:
    return fact(
        "loinc:85354-9",
        on,
        values=(
            value(systolic, "mm[Hg]", "loinc:8480-6"),
            value(diastolic, "mm[Hg]", "loinc:8462-4"),
        ),
    )


def test_one_finding_per_measure_in_library_order() -> None:
    findings = evaluate(library(), patient(age=50), AS_OF)
    assert [f.measure_id for f in findings] == [m.id for m in library().measures]
    assert {f.measure_version for f in findings} == {"2026.1"}


def test_evaluation_is_deterministic_and_ignores_fact_order() -> None:
    facts = [
        fact(DIABETES, LONG_AGO, fact_id="c1"),
        hba1c(7.0, date(2026, 1, 10), unit="%"),
        fact("cpt:83036", date(2026, 1, 10), fact_id="p1"),
        fact("cpt:77067", date(2025, 3, 1), fact_id="m1"),
        fact("loinc:24606-6", date(2025, 3, 1), fact_id="m2"),
        fact("cvx:150", date(2025, 10, 1), fact_id="v1"),
    ]
    first = evaluate(library(), patient(*facts, age=55), AS_OF)
    again = evaluate(library(), patient(*reversed(facts), age=55), AS_OF)
    assert [(f.outcome, f.due_on, sorted(f.evidence), f.reason) for f in first] == [
        (f.outcome, f.due_on, sorted(f.evidence), f.reason) for f in again
    ]


@pytest.mark.parametrize("status", ["entered-in-error", "not-done", "cancelled"])
def test_evidence_with_a_void_status_is_ignored(status: str) -> None:
    profile = patient(fact("cpt:77067", date(2026, 1, 5), status=status), age=50)
    found = finding("breast-cancer-screening", profile)
    assert (found.outcome, found.reason, found.evidence) == ("gap", "no-mammogram-in-2-years", ())


def test_evidence_dated_after_the_measurement_day_is_ignored() -> None:
    profile = patient(fact("cpt:77067", date(2026, 6, 16)), age=50)
    assert finding("breast-cancer-screening", profile).outcome == "gap"
    assert finding("breast-cancer-screening", profile, date(2026, 6, 16)).outcome == "met"


def test_an_entered_in_error_exclusion_is_ignored() -> None:
    profile = patient(fact("icd:Z90.13", LONG_AGO, status="entered-in-error"), age=50)
    assert finding("breast-cancer-screening", profile).outcome == "gap"


@pytest.mark.parametrize(
    ("condition", "outcome"),
    [
        (fact(DIABETES, LONG_AGO), "gap"),
        (fact("icd:e1165", LONG_AGO), "gap"),
        (fact("sct:44054006", LONG_AGO, kind="condition"), "gap"),
        (fact(DIABETES, LONG_AGO, status="resolved"), "not-applicable"),
        (fact(DIABETES, LONG_AGO, status="inactive"), "not-applicable"),
        (fact(DIABETES, LONG_AGO, status="entered-in-error"), "not-applicable"),
        (fact(DIABETES, LONG_AGO, until=date(2026, 6, 14)), "not-applicable"),
        (fact(DIABETES, LONG_AGO, until=AS_OF), "gap"),
        (fact(DIABETES, date(2026, 6, 16)), "not-applicable"),
        (fact(DIABETES, LONG_AGO, kind="encounter"), "not-applicable"),
        (fact("icd:E12.9", LONG_AGO), "not-applicable"),
    ],
)
def test_only_an_active_condition_puts_the_patient_in_the_population(
    condition: Fact, outcome: str
) -> None:
    found = finding("diabetes-hba1c", patient(condition, age=50))
    assert found.outcome == outcome
    if outcome == "not-applicable":
        assert found.reason == "no-qualifying-condition"


def test_a_resolved_exclusion_no_longer_excludes() -> None:
    resolved = fact("icd:F32.9", LONG_AGO, status="resolved")
    abated = fact("icd:F33.1", LONG_AGO, until=date(2025, 1, 1))
    active = fact("icd:F32.9", LONG_AGO, fact_id="dep")
    assert finding("depression-screening", patient(resolved, abated, age=30)).outcome == "gap"
    found = finding("depression-screening", patient(active, age=30))
    assert (found.outcome, found.reason, found.evidence) == (
        "excluded",
        "existing-depression",
        ("dep",),
    )


def test_an_unknown_birth_date_is_not_applicable_where_age_matters() -> None:
    profile = patient(birth=None, coverage=("medicare",))
    assert finding("breast-cancer-screening", profile).reason == "birth-date-unknown"
    assert finding("annual-wellness-visit", profile).outcome == "gap"


@pytest.mark.parametrize(
    ("percent", "outcome", "reason"),
    [
        (6.5, "met", "hba1c-current-below-8"),
        (7.9, "met", "hba1c-current-below-8"),
        (8.0, "gap", "hba1c-8-or-over"),
        (8.1, "gap", "hba1c-8-or-over"),
        (12.0, "gap", "hba1c-8-or-over"),
    ],
)
def test_the_latest_hba1c_must_be_below_8_percent(
    percent: float, outcome: str, reason: str
) -> None:
    result = hba1c(percent, date(2026, 3, 1))
    found = finding("diabetes-hba1c", patient(fact(DIABETES, LONG_AGO), result, age=50))
    assert (found.outcome, found.reason, found.due_on) == (outcome, reason, date(2027, 3, 1))
    assert found.evidence == (result.fact_id,)


def test_only_the_latest_hba1c_counts() -> None:
    condition = fact(DIABETES, LONG_AGO)
    improved = patient(
        condition, hba1c(9.5, date(2025, 9, 1)), hba1c(7.2, date(2026, 3, 1)), age=50
    )
    worse = patient(condition, hba1c(7.2, date(2025, 9, 1)), hba1c(9.5, date(2026, 3, 1)), age=50)
    assert finding("diabetes-hba1c", improved).outcome == "met"
    assert finding("diabetes-hba1c", worse).reason == "hba1c-8-or-over"


@pytest.mark.parametrize(("mmol", "outcome"), [(63, "met"), (64, "gap")])
def test_an_ifcc_hba1c_is_converted_to_percent(mmol: float, outcome: str) -> None:
    # 0.09148 x 63 + 2.152 = 7.92 %; x 64 = 8.01 %.
    profile = patient(fact(DIABETES, LONG_AGO), hba1c(mmol, date(2026, 3, 1), "mmol/mol"), age=50)
    assert finding("diabetes-hba1c", profile).outcome == outcome


def test_an_hba1c_claim_without_a_value_shows_the_test_was_done() -> None:
    profile = patient(fact(DIABETES, LONG_AGO), fact("cpt:83036", date(2026, 3, 1)), age=50)
    found = finding("diabetes-hba1c", profile)
    assert (found.outcome, found.due_on) == ("met", date(2027, 3, 1))


@pytest.mark.parametrize(
    ("systolic", "diastolic", "outcome"),
    [(139, 89, "met"), (140, 80, "gap"), (130, 90, "gap"), (120, 70, "met"), (150, 95, "gap")],
)
def test_the_latest_blood_pressure_must_be_below_140_90(
    systolic: float, diastolic: float, outcome: str
) -> None:
    reading = bp_panel(systolic, diastolic, date(2026, 2, 1))
    found = finding(
        "blood-pressure-control", patient(fact(HYPERTENSION, LONG_AGO), reading, age=60)
    )
    assert found.outcome == outcome
    assert found.evidence == (reading.fact_id,)
    if outcome == "gap":
        assert found.reason == "bp-140-90-or-over"


def test_separate_systolic_and_diastolic_observations_on_one_day_make_a_reading() -> None:
    day = date(2026, 2, 1)
    systolic = fact("loinc:8480-6", day, values=(value(132, "mm[Hg]"),), fact_id="sys")
    diastolic = fact("loinc:8462-4", day, values=(value(84, "mm[Hg]"),), fact_id="dia")
    found = finding(
        "blood-pressure-control", patient(fact(HYPERTENSION, LONG_AGO), systolic, diastolic, age=60)
    )
    assert (found.outcome, sorted(found.evidence)) == ("met", ["dia", "sys"])


def test_the_lowest_of_each_component_on_the_latest_day_counts() -> None:
    day = date(2026, 2, 1)
    profile = patient(
        fact(HYPERTENSION, LONG_AGO), bp_panel(150, 85, day), bp_panel(135, 95, day), age=60
    )
    assert finding("blood-pressure-control", profile).outcome == "met"


def test_a_day_with_only_one_component_is_not_a_reading() -> None:
    older = bp_panel(150, 95, date(2026, 1, 1))
    lone = fact("loinc:8480-6", date(2026, 3, 1), values=(value(120, "mm[Hg]"),))
    found = finding(
        "blood-pressure-control", patient(fact(HYPERTENSION, LONG_AGO), older, lone, age=60)
    )
    assert (found.outcome, found.evidence) == ("gap", (older.fact_id,))
    alone = finding("blood-pressure-control", patient(fact(HYPERTENSION, LONG_AGO), lone, age=60))
    assert (alone.outcome, alone.reason) == ("gap", "no-bp-in-12-months")


def test_a_reading_in_another_unit_is_not_read() -> None:
    reading = fact(
        "loinc:85354-9",
        date(2026, 2, 1),
        values=(value(12, "kPa", "loinc:8480-6"), value(8, "kPa", "loinc:8462-4")),
    )
    found = finding(
        "blood-pressure-control", patient(fact(HYPERTENSION, LONG_AGO), reading, age=60)
    )
    assert found.reason == "no-bp-in-12-months"


def test_kidney_health_needs_both_egfr_and_uacr() -> None:
    condition = fact(DIABETES, LONG_AGO)
    egfr = fact("loinc:33914-3", date(2026, 1, 1))
    uacr = fact("loinc:9318-7", date(2025, 11, 1))
    only_egfr = finding("kidney-health-diabetes", patient(condition, egfr, age=60))
    assert (only_egfr.outcome, only_egfr.reason) == ("gap", "no-uacr-in-12-months")
    both = finding("kidney-health-diabetes", patient(condition, egfr, uacr, age=60))
    assert (both.outcome, both.due_on) == ("met", date(2026, 11, 1))
    assert set(both.evidence) == {egfr.fact_id, uacr.fact_id}


def test_an_active_statin_without_an_end_counts_on_the_day() -> None:
    condition = fact(DIABETES, LONG_AGO)
    statin = fact("rx:83367", date(2019, 5, 1))
    found = finding("statin-therapy", patient(condition, statin, age=55))
    assert (found.outcome, found.due_on) == ("met", date(2027, 6, 15))
    not_taken = fact("rx:83367", date(2019, 5, 1), status="not-taken")
    assert finding("statin-therapy", patient(condition, not_taken, age=55)).outcome == "gap"


@pytest.mark.parametrize(
    ("until", "outcome"),
    [(date(2025, 6, 16), "met"), (date(2025, 6, 15), "gap"), (date(2025, 6, 14), "gap")],
)
def test_a_stopped_statin_counts_for_12_months_after_its_end(until: date, outcome: str) -> None:
    statin = fact("rx:36567", date(2020, 1, 1), status="stopped", until=until)
    profile = patient(fact(DIABETES, LONG_AGO), statin, age=55)
    assert finding("statin-therapy", profile).outcome == outcome


def test_statins_cover_ascvd_from_21_and_diabetes_from_40() -> None:
    ascvd = fact("icd:I25.10", LONG_AGO)
    assert finding("statin-therapy", patient(ascvd, age=25)).outcome == "gap"
    assert finding("statin-therapy", patient(ascvd, age=20)).reason == "age-not-eligible"
    assert finding("statin-therapy", patient(fact(DIABETES, LONG_AGO), age=39)).outcome == (
        "not-applicable"
    )
    assert finding("statin-therapy", patient(ascvd, age=90)).outcome == "gap"


def test_pneumococcal_covers_50_and_over_and_19_to_64_at_risk() -> None:
    copd = fact("icd:J44.9", LONG_AGO)
    assert finding("pneumococcal-vaccine", patient(age=50)).outcome == "gap"
    assert finding("pneumococcal-vaccine", patient(age=49)).outcome == "not-applicable"
    assert finding("pneumococcal-vaccine", patient(copd, age=30)).outcome == "gap"
    assert finding("pneumococcal-vaccine", patient(copd, age=18)).outcome == "not-applicable"


@pytest.mark.parametrize(
    ("codes", "outcome"),
    [
        (["cvx:216"], "met"),
        (["cpt:90677"], "met"),
        (["cvx:215"], "gap"),
        (["cvx:215", "cvx:33"], "met"),
        (["cpt:90671", "cpt:90732"], "met"),
        (["cpt:90670"], "gap"),
        (["cpt:90670", "cvx:33"], "met"),
        (["cvx:33"], "gap"),
    ],
)
def test_pneumococcal_is_once_pcv20_or_a_conjugate_plus_ppsv23(
    codes: list[str], outcome: str
) -> None:
    doses = [fact(code, date(2000 + i, 1, 1)) for i, code in enumerate(codes)]
    found = finding("pneumococcal-vaccine", patient(*doses, age=70))
    assert (found.outcome, found.due_on) == (outcome, None)
    if outcome == "met":
        assert set(found.evidence) == {d.fact_id for d in doses}
    else:
        assert found.reason == "no-pneumococcal-vaccine"


@pytest.mark.parametrize(
    ("pack_years", "outcome"), [(19, "not-applicable"), (20, "gap"), (45, "gap")]
)
def test_lung_screening_needs_20_pack_years(pack_years: float, outcome: str) -> None:
    history = fact("loinc:8664-5", date(2024, 1, 1), values=(value(pack_years, "{pack-years}"),))
    found = finding("lung-cancer-screening", patient(history, age=60))
    assert found.outcome == outcome
    if outcome == "not-applicable":
        assert found.reason == "under-20-pack-years"


def test_pack_years_can_be_a_component_of_the_smoking_status_observation() -> None:
    status = fact(
        "loinc:72166-2",
        date(2024, 1, 1),
        values=(value(30, "{pack-years}", "loinc:8664-5"),),
    )
    assert finding("lung-cancer-screening", patient(status, age=60)).outcome == "gap"
    assert finding("lung-cancer-screening", patient(age=60)).reason == "under-20-pack-years"


def test_the_latest_pack_years_counts() -> None:
    old = fact("loinc:8664-5", date(2020, 1, 1), values=(value(10, "{pack-years}"),))
    new = fact("loinc:8664-5", date(2025, 1, 1), values=(value(25, "{pack-years}"),))
    assert finding("lung-cancer-screening", patient(old, new, age=60)).outcome == "gap"


def test_the_wellness_visit_is_for_medicare_patients() -> None:
    assert (
        finding("annual-wellness-visit", patient(age=70, coverage=("medicare",))).outcome == "gap"
    )
    assert finding("annual-wellness-visit", patient(age=70)).reason == "coverage-not-eligible"
    other = patient(age=70, coverage=("commercial", "medicare"))
    assert finding("annual-wellness-visit", other).outcome == "gap"


@pytest.mark.parametrize(
    ("measure_id", "age"),
    [
        ("breast-cancer-screening", 50),
        ("cervical-cancer-screening", 30),
        ("osteoporosis-screening", 70),
    ],
)
@pytest.mark.parametrize(
    ("sex", "outcome"),
    [
        ("female", "gap"),
        ("male", "not-applicable"),
        (None, "not-applicable"),
        ("unknown", "not-applicable"),
    ],
)
def test_female_only_measures(measure_id: str, age: int, sex: Sex | None, outcome: str) -> None:
    found = finding(measure_id, patient(age=age, sex=sex))
    assert found.outcome == outcome
    if outcome == "not-applicable":
        assert found.reason == "sex-not-eligible"


@pytest.mark.parametrize(
    ("days_from_30th_birthday", "outcome"), [(-1, "gap"), (0, "met"), (1, "met")]
)
def test_hrhpv_counts_from_the_30th_birthday(days_from_30th_birthday: int, outcome: str) -> None:
    birth = date(1994, 3, 1)
    thirtieth = add_months(birth, 12 * 30)
    test = fact("cpt:87624", date.fromordinal(thirtieth.toordinal() + days_from_30th_birthday))
    found = finding("cervical-cancer-screening", patient(test, birth=birth), date(2026, 6, 15))
    assert found.outcome == outcome


def test_a_reading_in_mmhg_is_read_as_mm_hg() -> None:
    reading = fact(
        "loinc:85354-9",
        date(2026, 2, 1),
        values=(value(150, "mmHg", "loinc:8480-6"), value(80, "mmHg", "loinc:8462-4")),
    )
    found = finding(
        "blood-pressure-control", patient(fact(HYPERTENSION, LONG_AGO), reading, age=60)
    )
    assert found.reason == "bp-140-90-or-over"


@pytest.mark.parametrize(
    ("day", "months", "moved"),
    [
        (date(2024, 2, 29), 12, date(2025, 2, 28)),
        (date(2024, 2, 29), 48, date(2028, 2, 29)),
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2026, 3, 31), -1, date(2026, 2, 28)),
        (date(2026, 1, 15), -13, date(2024, 12, 15)),
        (date(2026, 12, 15), 1, date(2027, 1, 15)),
    ],
)
def test_adding_months_clamps_to_the_month_end(day: date, months: int, moved: date) -> None:
    assert add_months(day, months) == moved


@pytest.mark.parametrize(
    ("birth", "on", "months"),
    [
        (date(2008, 2, 29), date(2026, 2, 28), 215),
        (date(2008, 2, 29), date(2026, 3, 1), 216),
        (date(2000, 1, 31), date(2000, 2, 29), 0),
        (date(2000, 1, 31), date(2000, 3, 1), 1),
        (date(2000, 5, 10), date(2000, 5, 9), -1),
    ],
)
def test_age_in_whole_months(birth: date, on: date, months: int) -> None:
    assert age_in_months(birth, on) == months


def test_a_mammogram_on_29_february_is_due_on_28_february() -> None:
    profile = patient(fact("cpt:77067", date(2024, 2, 29)), age=50)
    assert finding("breast-cancer-screening", profile).due_on == date(2026, 2, 28)


def test_the_season_holding_a_day() -> None:
    assert season_start(date(2026, 6, 30), 7) == date(2025, 7, 1)
    assert season_start(date(2026, 7, 1), 7) == date(2026, 7, 1)
