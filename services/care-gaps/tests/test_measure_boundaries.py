"""Every measure at its edges: the day before, of and after the birthday that enters or
leaves the population, evidence exactly one interval old (the day before, of and after
the due date), each exclusion, and the influenza season's turn. Synthetic patients."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

import pytest
from careloop_caregaps.domain.dates import add_months
from careloop_caregaps.domain.facts import Fact, PatientProfile, Sex

from .test_evaluator import AS_OF, born, fact, finding, patient, value

pytestmark = pytest.mark.unit

DAY = timedelta(days=1)
BIRTH = date(1950, 3, 10)


@dataclass(frozen=True)
class Context:
    """What puts a patient in a measure's population, apart from age."""

    sex: Sex = "female"
    codes: tuple[str, ...] = ()
    coverage: tuple[str, ...] = ()
    more_facts: Callable[[date], tuple[Fact, ...]] = field(default=lambda _on: ())

    def facts(self, on: date) -> tuple[Fact, ...]:
        return tuple(fact(code, on) for code in self.codes) + self.more_facts(on)

    def patient(self, birth: date, *facts: Fact) -> PatientProfile:
        return patient(
            *self.facts(birth), *facts, birth=birth, sex=self.sex, coverage=self.coverage
        )


def _pack_years(on: date) -> tuple[Fact, ...]:
    return (fact("loinc:8664-5", on, values=(value(30, "{pack-years}"),)),)


WOMAN = Context()
ANYONE = Context(sex="male")
DIABETIC = Context(codes=("icd:E11.9",))
HYPERTENSIVE = Context(codes=("icd:I10",))
SMOKER = Context(more_facts=_pack_years)
MEDICARE = Context(coverage=("medicare",))

# (measure, context, entering age in months, leaving age in years or None)
AGES = [
    ("breast-cancer-screening", WOMAN, 40 * 12, 74),
    ("colorectal-cancer-screening", ANYONE, 45 * 12, 75),
    ("cervical-cancer-screening", WOMAN, 21 * 12, 64),
    ("diabetes-hba1c", DIABETIC, 18 * 12, 75),
    ("blood-pressure-control", HYPERTENSIVE, 18 * 12, 85),
    ("diabetic-eye-exam", DIABETIC, 18 * 12, 75),
    ("kidney-health-diabetes", DIABETIC, 18 * 12, 85),
    ("statin-therapy", DIABETIC, 40 * 12, 75),
    ("statin-therapy", Context(codes=("icd:I21.9",)), 21 * 12, None),
    ("influenza-vaccine", ANYONE, 6, None),
    ("pneumococcal-vaccine", ANYONE, 50 * 12, None),
    ("pneumococcal-vaccine", Context(codes=("icd:J44.9",)), 19 * 12, None),
    ("depression-screening", ANYONE, 12 * 12, None),
    ("lung-cancer-screening", SMOKER, 50 * 12, 80),
    ("osteoporosis-screening", WOMAN, 65 * 12, None),
]


def _age_id(case: tuple[str, Context, int, int | None]) -> str:
    return f"{case[0]}-{case[2] // 12 if case[2] >= 12 else case[2]}"


@pytest.mark.parametrize("case", AGES, ids=[_age_id(c) for c in AGES])
@pytest.mark.parametrize(("offset", "inside"), [(-1, False), (0, True), (1, True)])
def test_the_birthday_that_enters_the_population(
    case: tuple[str, Context, int, int | None], offset: int, inside: bool
) -> None:
    measure_id, context, months, _ = case
    birthday = add_months(BIRTH, months)
    found = finding(measure_id, context.patient(BIRTH), birthday + offset * DAY)
    assert (found.outcome != "not-applicable") is inside
    if not inside:
        assert found.reason == "age-not-eligible"


LEAVING = [c for c in AGES if c[3] is not None]


@pytest.mark.parametrize("case", LEAVING, ids=[f"{c[0]}-{c[3]}" for c in LEAVING])
@pytest.mark.parametrize(("offset", "inside"), [(-1, True), (0, False), (1, False)])
def test_the_birthday_that_leaves_the_population(
    case: tuple[str, Context, int, int | None], offset: int, inside: bool
) -> None:
    measure_id, context, _, last_year = case
    assert last_year is not None
    birthday = add_months(BIRTH, (last_year + 1) * 12)
    found = finding(measure_id, context.patient(BIRTH), birthday + offset * DAY)
    assert (found.outcome != "not-applicable") is inside
    if not inside:
        assert found.reason == "age-not-eligible"


def test_a_29_february_birthday_is_reached_on_1_march_in_a_common_year() -> None:
    birth = date(2008, 2, 29)
    condition = DIABETIC.patient(birth)
    assert finding("diabetes-hba1c", condition, date(2026, 2, 28)).outcome == "not-applicable"
    assert finding("diabetes-hba1c", condition, date(2026, 3, 1)).outcome == "gap"


# (measure, context, age, evidence on a day, interval in months, gap reason)
def _one(code: str) -> Callable[[date], tuple[Fact, ...]]:
    return lambda on: (fact(code, on),)


def _hba1c(on: date) -> tuple[Fact, ...]:
    return (fact("loinc:4548-4", on, values=(value(7.0, "%"),)),)


def _hba1c_17856(on: date) -> tuple[Fact, ...]:
    return (fact("loinc:17856-6", on, values=(value(6.1, "%"),)),)


def _bp(on: date) -> tuple[Fact, ...]:
    return (
        fact(
            "loinc:85354-9",
            on,
            values=(value(128, "mm[Hg]", "loinc:8480-6"), value(78, "mm[Hg]", "loinc:8462-4")),
        ),
    )


def _kidney(on: date) -> tuple[Fact, ...]:
    return (fact("loinc:33914-3", on), fact("loinc:9318-7", on))


def _statin(code: str) -> Callable[[date], tuple[Fact, ...]]:
    return lambda on: (fact(code, on, status="completed"),)


INTERVALS: list[tuple[str, Context, int, str, Callable[[date], tuple[Fact, ...]], int, str]] = []


def _add(measure: str, context: Context, age: int, reason: str, months: int, *codes: str) -> None:
    for code in codes:
        INTERVALS.append((measure, context, age, code, _one(code), months, reason))


_add(
    "breast-cancer-screening",
    WOMAN,
    55,
    "no-mammogram-in-2-years",
    24,
    "cpt:77065",
    "cpt:77066",
    "cpt:77067",
    "loinc:24606-6",
)
_add(
    "colorectal-cancer-screening",
    ANYONE,
    60,
    "no-colorectal-screening-current",
    120,
    "cpt:45378",
    "cpt:45398",
    "hcpcs:G0105",
    "hcpcs:G0121",
)
_add(
    "colorectal-cancer-screening",
    ANYONE,
    60,
    "no-colorectal-screening-current",
    12,
    "cpt:82274",
    "loinc:29771-3",
    "loinc:57905-2",
)
_add(
    "colorectal-cancer-screening",
    ANYONE,
    60,
    "no-colorectal-screening-current",
    36,
    "cpt:81528",
    "loinc:77353-1",
)
_add(
    "colorectal-cancer-screening",
    ANYONE,
    60,
    "no-colorectal-screening-current",
    60,
    "cpt:74261",
    "cpt:74263",
    "cpt:45330",
    "cpt:45350",
    "hcpcs:G0104",
)
_add(
    "cervical-cancer-screening",
    WOMAN,
    45,
    "no-cervical-screening-current",
    36,
    "cpt:88141",
    "cpt:88175",
    "loinc:10524-7",
    "loinc:19762-4",
)
_add(
    "cervical-cancer-screening",
    WOMAN,
    45,
    "no-cervical-screening-current",
    60,
    "cpt:87624",
    "cpt:87625",
    "loinc:21440-3",
    "loinc:30167-1",
)
_add("diabetes-hba1c", DIABETIC, 50, "no-hba1c-in-12-months", 12, "cpt:83036", "cpt:83037")
_add(
    "diabetic-eye-exam",
    DIABETIC,
    50,
    "no-eye-exam-in-12-months",
    12,
    "cpt:92002",
    "cpt:92014",
    "cpt:92227",
    "cpt:92229",
    "cpt:2022F",
    "cpt:2026F",
)
_add(
    "annual-wellness-visit",
    MEDICARE,
    70,
    "no-wellness-visit-in-12-months",
    12,
    "hcpcs:G0438",
    "hcpcs:G0439",
    "cpt:99381",
    "cpt:99387",
    "cpt:99391",
    "cpt:99397",
)
_add(
    "depression-screening",
    ANYONE,
    30,
    "no-depression-screening-in-12-months",
    12,
    "loinc:44261-6",
    "loinc:55757-9",
    "hcpcs:G0444",
)
_add("lung-cancer-screening", SMOKER, 60, "no-ldct-in-12-months", 12, "cpt:71271")
_add("osteoporosis-screening", WOMAN, 70, "no-dxa-in-2-years", 24, "cpt:77080", "cpt:77085")
INTERVALS += [
    ("diabetes-hba1c", DIABETIC, 50, "loinc:4548-4", _hba1c, 12, "no-hba1c-in-12-months"),
    ("diabetes-hba1c", DIABETIC, 50, "loinc:17856-6", _hba1c_17856, 12, "no-hba1c-in-12-months"),
    ("blood-pressure-control", HYPERTENSIVE, 60, "bp-panel", _bp, 12, "no-bp-in-12-months"),
    ("kidney-health-diabetes", DIABETIC, 60, "egfr+uacr", _kidney, 12, "no-egfr-in-12-months"),
]
for _code in ("rx:83367", "rx:41127", "rx:6472", "rx:861634", "rx:42463", "rx:301542", "rx:36567"):
    INTERVALS.append(
        ("statin-therapy", DIABETIC, 55, _code, _statin(_code), 12, "no-statin-in-12-months")
    )

DUE = date(2026, 6, 15)


@pytest.mark.parametrize("case", INTERVALS, ids=[f"{c[0]}-{c[3]}" for c in INTERVALS])
@pytest.mark.parametrize(("offset", "outcome"), [(-1, "met"), (0, "gap"), (1, "gap")])
def test_evidence_holds_until_its_due_date(
    case: tuple[str, Context, int, str, Callable[[date], tuple[Fact, ...]], int, str],
    offset: int,
    outcome: str,
) -> None:
    measure_id, context, age, _, evidence, months, reason = case
    done = add_months(DUE, -months)
    facts = evidence(done)
    profile = context.patient(born(age, DUE), *facts)
    found = finding(measure_id, profile, DUE + offset * DAY)
    assert (found.outcome, found.due_on) == (outcome, DUE)
    if outcome == "met":
        assert set(found.evidence) == {f.fact_id for f in facts}
    else:
        assert (found.reason, found.evidence) == (reason, ())


@pytest.mark.parametrize("case", INTERVALS[:1] + INTERVALS[-1:], ids=["breast", "statin"])
def test_never_done_is_a_gap_without_a_due_date(
    case: tuple[str, Context, int, str, Callable[[date], tuple[Fact, ...]], int, str],
) -> None:
    measure_id, context, age, *_, reason = case
    found = finding(measure_id, context.patient(born(age)))
    assert (found.outcome, found.due_on, found.evidence, found.reason) == ("gap", None, (), reason)


@pytest.mark.parametrize(
    ("dose", "due"),
    [
        (date(2025, 7, 1), date(2026, 7, 1)),
        (date(2025, 9, 15), date(2026, 7, 1)),
        (date(2026, 6, 30), date(2026, 7, 1)),
        (date(2025, 6, 30), date(2025, 7, 1)),
    ],
)
@pytest.mark.parametrize("code", ["cvx:88", "cvx:150", "cvx:197", "cpt:90686", "cpt:90653"])
@pytest.mark.parametrize(("offset", "outcome"), [(-1, "met"), (0, "gap"), (1, "gap")])
def test_an_influenza_dose_holds_for_its_season(
    dose: date, due: date, code: str, offset: int, outcome: str
) -> None:
    as_of = due + offset * DAY
    if as_of < dose:
        pytest.skip("the dose is after this measurement day")
    found = finding("influenza-vaccine", patient(fact(code, dose), age=40), as_of)
    assert (found.outcome, found.due_on) == (outcome, due)


def test_codes_of_the_range_that_are_not_influenza_vaccines_do_not_count() -> None:
    pcv13 = fact("cpt:90670", date(2025, 10, 1))
    assert finding("influenza-vaccine", patient(pcv13, age=40)).outcome == "gap"


# (measure, context, age, exclusion codes, reason)
EXCLUSIONS = [
    ("breast-cancer-screening", WOMAN, 55, ["icd:Z90.13"], "bilateral-mastectomy"),
    ("breast-cancer-screening", WOMAN, 55, ["hcpcs:T2042"], "hospice"),
    ("breast-cancer-screening", WOMAN, 55, ["sct:385763009"], "hospice"),
    ("colorectal-cancer-screening", ANYONE, 60, ["icd:C18.9"], "colorectal-cancer"),
    ("colorectal-cancer-screening", ANYONE, 60, ["icd:C19"], "colorectal-cancer"),
    ("colorectal-cancer-screening", ANYONE, 60, ["icd:C20"], "colorectal-cancer"),
    ("colorectal-cancer-screening", ANYONE, 60, ["cpt:44150"], "total-colectomy"),
    ("colorectal-cancer-screening", ANYONE, 60, ["cpt:44212"], "total-colectomy"),
    ("colorectal-cancer-screening", ANYONE, 60, ["hcpcs:T2046"], "hospice"),
    ("cervical-cancer-screening", WOMAN, 45, ["icd:Z90.710"], "no-cervix"),
    ("cervical-cancer-screening", WOMAN, 45, ["icd:Z90.712"], "no-cervix"),
    ("cervical-cancer-screening", WOMAN, 45, ["icd:Q51.5"], "no-cervix"),
    ("cervical-cancer-screening", WOMAN, 45, ["hcpcs:T2043"], "hospice"),
    ("diabetes-hba1c", DIABETIC, 50, ["hcpcs:T2044"], "hospice"),
    ("diabetes-hba1c", DIABETIC, 50, ["icd:Z51.5"], "palliative-care"),
    ("diabetes-hba1c", DIABETIC, 50, ["sct:103735009"], "palliative-care"),
    ("blood-pressure-control", HYPERTENSIVE, 60, ["icd:N18.6"], "esrd"),
    ("blood-pressure-control", HYPERTENSIVE, 60, ["icd:Z99.2"], "esrd"),
    ("blood-pressure-control", HYPERTENSIVE, 60, ["icd:Z49.01"], "esrd"),
    ("blood-pressure-control", HYPERTENSIVE, 60, ["cpt:90935"], "esrd"),
    ("blood-pressure-control", HYPERTENSIVE, 40, ["icd:Z33.1"], "pregnancy"),
    ("blood-pressure-control", HYPERTENSIVE, 40, ["icd:O09.511"], "pregnancy"),
    ("blood-pressure-control", HYPERTENSIVE, 40, ["icd:Z34.00"], "pregnancy"),
    ("blood-pressure-control", HYPERTENSIVE, 60, ["hcpcs:T2045"], "hospice"),
    ("diabetic-eye-exam", DIABETIC, 50, ["cpt:65101", "cpt:65105"], "bilateral-enucleation"),
    ("kidney-health-diabetes", DIABETIC, 60, ["icd:N18.6"], "esrd"),
    ("kidney-health-diabetes", DIABETIC, 60, ["cpt:90947"], "esrd"),
    ("statin-therapy", DIABETIC, 55, ["icd:T46.6X5A"], "statin-intolerance"),
    ("statin-therapy", DIABETIC, 55, ["icd:G72.0"], "statin-intolerance"),
    ("statin-therapy", DIABETIC, 55, ["icd:M62.82"], "statin-intolerance"),
    ("statin-therapy", DIABETIC, 55, ["icd:N18.6"], "esrd"),
    ("statin-therapy", DIABETIC, 44, ["icd:Z34.90"], "pregnancy"),
    ("influenza-vaccine", ANYONE, 40, ["icd:T80.52XA"], "influenza-vaccine-anaphylaxis"),
    ("depression-screening", ANYONE, 30, ["icd:F31.9"], "bipolar-disorder"),
    ("depression-screening", ANYONE, 30, ["icd:F32.A"], "existing-depression"),
    ("depression-screening", ANYONE, 30, ["icd:F33.0"], "existing-depression"),
]


@pytest.mark.parametrize("case", EXCLUSIONS, ids=[f"{c[0]}-{'+'.join(c[3])}" for c in EXCLUSIONS])
def test_each_exclusion_takes_the_patient_out(
    case: tuple[str, Context, int, list[str], str],
) -> None:
    measure_id, context, age, codes, reason = case
    excluding = [fact(code, AS_OF - 30 * DAY) for code in codes]
    found = finding(measure_id, context.patient(born(age), *excluding))
    assert (found.outcome, found.reason, found.due_on) == ("excluded", reason, None)
    assert set(found.evidence) == {f.fact_id for f in excluding}
    # Without it, the same patient is in the measure.
    assert finding(measure_id, context.patient(born(age))).outcome != "not-applicable"


def test_an_exclusion_outranks_current_evidence() -> None:
    profile = WOMAN.patient(born(55), fact("cpt:77067", AS_OF), fact("icd:Z90.13", AS_OF))
    assert finding("breast-cancer-screening", profile).outcome == "excluded"


def test_an_exclusion_applies_only_inside_the_population() -> None:
    profile = ANYONE.patient(born(55), fact("icd:Z90.13", AS_OF))
    assert finding("breast-cancer-screening", profile).reason == "sex-not-eligible"


@pytest.mark.parametrize(
    ("measure_id", "context", "code", "reason"),
    [
        ("breast-cancer-screening", WOMAN, "hcpcs:T2042", "hospice"),
        ("diabetes-hba1c", DIABETIC, "sct:103735009", "palliative-care"),
        ("blood-pressure-control", HYPERTENSIVE, "hcpcs:T2042", "hospice"),
    ],
)
@pytest.mark.parametrize(("days_after", "excluded"), [(-1, False), (0, False), (1, True)])
def test_a_year_bound_exclusion_holds_for_12_months(
    measure_id: str, context: Context, code: str, reason: str, days_after: int, excluded: bool
) -> None:
    on = add_months(AS_OF, -12) + days_after * DAY
    found = finding(measure_id, context.patient(born(60), fact(code, on)))
    assert (found.outcome == "excluded") is excluded
    if excluded:
        assert found.reason == reason


def test_one_enucleation_is_not_bilateral() -> None:
    profile = DIABETIC.patient(born(50), fact("cpt:65101", AS_OF))
    assert finding("diabetic-eye-exam", profile).outcome == "gap"


@pytest.mark.parametrize(("days_after", "excluded"), [(-1, True), (0, True), (1, False)])
def test_quitting_15_years_ago_ends_lung_screening(days_after: int, excluded: bool) -> None:
    quit_on = add_months(AS_OF, -15 * 12) + days_after * DAY
    quit = fact("loinc:74010-0", quit_on, fact_id="quit")
    found = finding("lung-cancer-screening", SMOKER.patient(born(60), quit))
    if excluded:
        assert (found.outcome, found.reason, found.evidence) == (
            "excluded",
            "quit-15-or-more-years",
            ("quit",),
        )
    else:
        assert found.outcome == "gap"


def test_the_latest_quit_date_counts() -> None:
    old = fact("loinc:74010-0", date(2000, 1, 1))
    again = fact("loinc:74010-0", date(2020, 1, 1))
    assert finding("lung-cancer-screening", SMOKER.patient(born(60), old, again)).outcome == "gap"
