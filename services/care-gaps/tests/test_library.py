"""The measure library's documents: the shipped files load, and a bad document is refused
with the document and the field named."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from careloop_caregaps.domain.facts import Coding
from careloop_caregaps.domain.library import MeasureLibraryError, parse_library
from careloop_caregaps.store.library_files import DEFAULT_DIRECTORY, load_library

pytestmark = pytest.mark.unit

EXPECTED = [
    "breast-cancer-screening",
    "colorectal-cancer-screening",
    "cervical-cancer-screening",
    "diabetes-hba1c",
    "blood-pressure-control",
    "diabetic-eye-exam",
    "kidney-health-diabetes",
    "statin-therapy",
    "annual-wellness-visit",
    "influenza-vaccine",
    "pneumococcal-vaccine",
    "depression-screening",
    "lung-cancer-screening",
    "osteoporosis-screening",
]


def _value_set(ident: str = "mammography", **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": ident,
        "version": "2026.1",
        "title": "Mammography",
        "source": "CPT (AMA)",
        "codes": {"cpt": ["77065", "77066", "77067"]},
    }
    doc.update(overrides)
    return doc


def _measure(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "breast-cancer-screening",
        "version": "2026.1",
        "title": "Breast cancer screening",
        "source": "USPSTF 2024; CMS125",
        "population": {"any_of": [{"age": {"min_years": 40, "max_years": 74}, "sex": ["female"]}]},
        "exclusions": [],
        "numerator": {
            "all_of": [
                {
                    "any_of": [{"value_sets": ["mammography"], "interval": {"years": 2}}],
                    "reason": "no-mammogram-in-2-years",
                }
            ]
        },
        "met_reason": "mammogram-current",
    }
    doc.update(overrides)
    return doc


def test_the_shipped_library_loads_every_measure_in_order() -> None:
    library = load_library()
    assert [m.id for m in library.measures] == EXPECTED
    for measure in library.measures:
        assert measure.version == "2026.1"
        assert measure.title
        assert measure.source
        for ident in measure.value_set_ids:
            value_set = library.value_sets[ident]
            assert value_set.version
            assert value_set.source
    assert library.measure("diabetes-hba1c").title.startswith("Diabetes")


def test_the_code_index_finds_exact_codes_and_icd10_categories() -> None:
    library = load_library()
    assert library.value_sets_of(Coding("cpt", "77066")) == {"mammography"}
    assert "diabetes" in library.value_sets_of(Coding("icd-10-cm", "E11.65"))
    assert "diabetes" in library.value_sets_of(Coding("icd-10-cm", "e1165"))
    assert library.value_sets_of(Coding("icd-10-cm", "E12.9")) == frozenset()
    assert library.value_sets_of(Coding("loinc", "77066")) == frozenset()


def test_a_minimal_library_parses() -> None:
    library = parse_library([_measure()], [_value_set()])
    measure = library.measure("breast-cancer-screening")
    assert measure.population[0].min_age_months == 480
    assert measure.population[0].max_age_months == 900
    assert measure.requirements[0].alternatives[0].interval_months == 24


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda m: m["numerator"]["all_of"][0]["any_of"][0].update(value_sets=["nope"]),
            "value_sets[0]",
        ),
        (lambda m: m["population"]["any_of"][0]["age"].update(min_years=-1), "age.min_years"),
        (
            lambda m: m["population"]["any_of"][0]["age"].update(max_years=30),
            "population.any_of[0].age",
        ),
        (lambda m: m["population"]["any_of"][0]["age"].update(min_years="40"), "age.min_years"),
        (
            lambda m: m["numerator"]["all_of"][0]["any_of"][0].update(interval={"years": 0}),
            "interval.years",
        ),
        (
            lambda m: m["numerator"]["all_of"][0]["any_of"][0].update(interval={"weeks": 3}),
            "interval",
        ),
        (
            lambda m: m["numerator"]["all_of"][0]["any_of"][0].update(once=True),
            "numerator.all_of[0].any_of[0]",
        ),
        (lambda m: m["population"]["any_of"][0].update(sex=["woman"]), "sex"),
        (lambda m: m["population"]["any_of"][0].update(conditions=["diabetes"]), "conditions[0]"),
        (lambda m: m.update(exclusions=[{"value_set": "mammography"}]), "exclusions[0].reason"),
        (lambda m: m.pop("version"), "version"),
        (
            lambda m: m["numerator"]["all_of"][0]["any_of"][0].update(
                interval=None, season={"start_month": 13}
            ),
            "numerator.all_of[0].any_of[0]",
        ),
        (
            lambda m: m.update(
                exclusions=[{"value_set": "mammography", "reason": "x", "min_count": 0}]
            ),
            "min_count",
        ),
        (
            lambda m: m.update(
                exclusions=[
                    {
                        "value_set": "mammography",
                        "reason": "x",
                        "lookback": {"years": 1},
                        "latest_at_least_ago": {"years": 15},
                    }
                ]
            ),
            "exclusions[0]",
        ),
        (
            lambda m: m["numerator"]["all_of"][0]["any_of"][0].update(
                result={"components": [{"value_set": "mammography"}], "reason": "x"}
            ),
            "result.components[0]",
        ),
        (
            lambda m: m["numerator"]["all_of"][0]["any_of"][0].update(
                result={
                    "components": [
                        {"value_set": "mammography", "below": 1, "convert": {"g": {"scale": 2}}}
                    ],
                    "reason": "x",
                }
            ),
            "result.components[0].unit",
        ),
        (lambda m: m["numerator"].update(all_of=[]), "numerator.all_of"),
        (lambda m: m["population"].update(any_of=[]), "population.any_of"),
        (lambda m: m.update(notes=3), "notes"),
        (
            lambda m: m["population"]["any_of"][0]["age"].update(min_months=6),
            "population.any_of[0].age",
        ),
        (lambda m: m.update(colour="blue"), "(document)"),
    ],
)
def test_a_bad_measure_is_refused_naming_the_measure_and_field(change: Any, field: str) -> None:
    doc = _measure()
    change(doc)
    with pytest.raises(MeasureLibraryError) as caught:
        parse_library({"breast-cancer-screening.json": doc}, [_value_set()])
    assert "breast-cancer-screening" in str(caught.value)
    assert field in caught.value.field


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (_value_set(codes={"cpt4": ["77065"]}), "codes.cpt4"),
        (_value_set(codes={}), "codes"),
        (_value_set(codes={"cpt": ["77065", "77065"]}), "codes.cpt"),
        (_value_set(code_prefixes={"cpt": ["770"]}), "code_prefixes.cpt"),
        (_value_set(code_prefixes={"icd-10-cm": ["E1"]}), "code_prefixes.icd-10-cm"),
        (_value_set(source=""), "source"),
    ],
)
def test_a_bad_value_set_is_refused(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(MeasureLibraryError) as caught:
        parse_library([_measure()], {"value_sets/mammography.json": doc})
    assert caught.value.field == field
    assert "mammography" in caught.value.where


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(MeasureLibraryError, match="duplicate measure id"):
        parse_library([_measure(), _measure()], [_value_set()])
    with pytest.raises(MeasureLibraryError, match="duplicate value set id"):
        parse_library([_measure()], [_value_set(), _value_set()])


def _copy_library(tmp_path: Path) -> Path:
    target = tmp_path / "measures"
    shutil.copytree(DEFAULT_DIRECTORY, target)
    return target


def test_files_must_match_the_index(tmp_path: Path) -> None:
    base = _copy_library(tmp_path)
    extra = copy.deepcopy(json.loads((base / "osteoporosis-screening.json").read_text()))
    extra["id"] = "extra-measure"
    (base / "extra-measure.json").write_text(json.dumps(extra))
    with pytest.raises(MeasureLibraryError, match="does not list extra-measure"):
        load_library(base)
    (base / "extra-measure.json").unlink()
    (base / "osteoporosis-screening.json").unlink()
    with pytest.raises(MeasureLibraryError, match="no file for osteoporosis-screening"):
        load_library(base)


def test_a_file_that_is_not_json_is_named(tmp_path: Path) -> None:
    base = _copy_library(tmp_path)
    (base / "value_sets" / "hospice.json").write_text("{not json")
    with pytest.raises(MeasureLibraryError) as caught:
        load_library(base)
    assert caught.value.where == "value_sets/hospice.json"


def test_a_file_id_must_match_its_name(tmp_path: Path) -> None:
    base = _copy_library(tmp_path)
    path = base / "value_sets" / "hospice.json"
    doc = json.loads(path.read_text())
    doc["id"] = "hospice-care"
    path.write_text(json.dumps(doc))
    with pytest.raises(MeasureLibraryError, match="must match the file name"):
        load_library(base)


def test_errors_name_a_listed_document_by_its_id() -> None:
    with pytest.raises(MeasureLibraryError) as caught:
        parse_library([_measure(title="")], [_value_set()])
    assert caught.value.where == "measure breast-cancer-screening"
    assert caught.value.field == "title"


def test_a_season_must_name_a_month() -> None:
    doc = _measure()
    doc["numerator"]["all_of"][0]["any_of"][0] = {
        "value_sets": ["mammography"],
        "season": {"start_month": 13},
    }
    with pytest.raises(MeasureLibraryError) as caught:
        parse_library([doc], [_value_set()])
    assert caught.value.field.endswith("season.start_month")
