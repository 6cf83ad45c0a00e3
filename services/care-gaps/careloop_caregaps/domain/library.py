"""The measure library: versioned measure and value-set documents, validated and compiled.

A measure document is CQL-shaped so a real CQL engine could replace the evaluator later:

- `population.any_of`: groups of criteria, the patient is in the population when every
  criterion of at least one group holds on the measurement date (`as_of`): `age`
  (`min_years` or `min_months`, `max_years`; the age taken on the measurement date),
  `sex`, `conditions` (value-set ids, any one active condition), `coverage` (any one of
  the patient's coverage kinds, e.g. "medicare"), `observations` (the latest value of a
  value set at least / below a threshold, e.g. pack-years).
- `exclusions`: value sets that take the patient out (ever, or within `lookback`;
  `min_count` facts; or `latest_at_least_ago`: the latest fact of the set is at least that
  old, e.g. quit smoking 15 years ago), each with the staff-facing `reason`.
- `numerator.all_of`: requirements that must all be current; each requirement is met by
  any one of its `any_of` alternatives: `value_sets` (all of them present; one set is the
  usual case, two express a series such as PCV15 + PPSV23), and how long the evidence
  holds: `interval` (months or years; due = last completion + interval), `season`
  (`start_month`: the evidence holds for the season, e.g. July to June) or `once` (holds
  for ever). `min_age` restricts the evidence to tests done from that age (hrHPV from 30);
  `result` checks the latest day's values against thresholds (HbA1c < 8 %, BP < 140/90).
- `met_reason`, `version`, `title` and `source` (the USPSTF / CMS eCQM reference).

A value-set document holds explicit codes per code system (`codes`); ICD-10-CM sets may
also list `code_prefixes` (a category such as E11 and every code under it: ICD-10-CM
codes extend their category's characters, so the prefix is the hierarchy).

`parse_library` checks every reference and number and raises `MeasureLibraryError`
naming the document and the field; it compiles one code -> value-set-ids index so that
the evaluator looks each of a patient's codes up once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from careloop_caregaps.domain.facts import Coding

CODE_SYSTEMS = frozenset({"icd-10-cm", "snomed-ct", "loinc", "cpt", "hcpcs", "cvx", "rxnorm"})
"""The short code-system names facts carry (see `Coding.system`)."""

PREFIX_SYSTEMS = frozenset({"icd-10-cm"})
"""Systems whose codes extend their parent's characters, so a prefix names a subtree."""

SEXES = frozenset({"female", "male", "other", "unknown"})
MAX_AGE_YEARS = 130
MAX_INTERVAL_MONTHS = 50 * 12


class MeasureLibraryError(ValueError):
    """A measure or value-set document is invalid; the message names the document and field."""

    def __init__(self, where: str, field: str, problem: str) -> None:
        super().__init__(f"{where}: {field}: {problem}")
        self.where = where
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class ValueSet:
    id: str
    version: str
    title: str
    source: str
    codes: Mapping[str, frozenset[str]]
    code_prefixes: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Component:
    """One value a result is read from (a component code or the observation's own code)."""

    value_set: str
    unit: str | None
    """UCUM unit the thresholds are in; values in other units are ignored unless converted."""
    convert: Mapping[str, tuple[float, float]]
    """Other unit -> (scale, offset) into `unit` (HbA1c mmol/mol to %: 0.09148 x + 2.152)."""
    below: float | None = None
    at_least: float | None = None


@dataclass(frozen=True, slots=True)
class ObservationCriterion:
    component: Component
    reason: str


@dataclass(frozen=True, slots=True)
class Criteria:
    min_age_months: int | None
    max_age_months: int | None
    """Exclusive: max_years 74 is below 75 years, i.e. 900 months."""
    sexes: frozenset[str] | None
    conditions: tuple[str, ...]
    coverage: frozenset[str] | None
    observations: tuple[ObservationCriterion, ...]


@dataclass(frozen=True, slots=True)
class Exclusion:
    value_set: str
    reason: str
    lookback_months: int | None
    min_count: int
    latest_at_least_months: int | None


@dataclass(frozen=True, slots=True)
class ResultRule:
    components: tuple[Component, ...]
    require_value: bool
    """True: a day without every component's value is not a reading (BP needs both)."""
    reason: str


@dataclass(frozen=True, slots=True)
class Alternative:
    value_sets: tuple[str, ...]
    interval_months: int | None
    season_start_month: int | None
    once: bool
    min_age_months: int | None
    result: ResultRule | None


@dataclass(frozen=True, slots=True)
class Requirement:
    alternatives: tuple[Alternative, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Measure:
    id: str
    version: str
    title: str
    source: str
    population: tuple[Criteria, ...]
    exclusions: tuple[Exclusion, ...]
    requirements: tuple[Requirement, ...]
    met_reason: str
    value_set_ids: tuple[str, ...]
    """Every value set the measure refers to, in first-use order."""


class MeasureLibrary:
    """The compiled measures (in library order) and value sets, with the code index."""

    __slots__ = ("_by_id", "_exact", "_lookups", "_prefixes", "measures", "value_sets")

    def __init__(self, measures: tuple[Measure, ...], value_sets: Mapping[str, ValueSet]) -> None:
        self.measures = measures
        self.value_sets = dict(value_sets)
        self._by_id = {m.id: m for m in measures}
        exact: dict[tuple[str, str], set[str]] = {}
        prefixes: dict[tuple[str, str], set[str]] = {}
        for vs in value_sets.values():
            for system, codes in vs.codes.items():
                for code in codes:
                    exact.setdefault((system, code), set()).add(vs.id)
            for system, starts in vs.code_prefixes.items():
                for start in starts:
                    prefixes.setdefault((system, start), set()).add(vs.id)
        self._exact = {k: frozenset(v) for k, v in exact.items()}
        self._prefixes = {k: frozenset(v) for k, v in prefixes.items()}
        # Codings repeat across patients; each one's value sets are worked out once.
        self._lookups: dict[Coding, frozenset[str]] = {}

    def measure(self, measure_id: str) -> Measure:
        """The measure with that id; KeyError when the library has none."""
        return self._by_id[measure_id]

    def value_sets_of(self, coding: Coding) -> frozenset[str]:
        """The ids of every value set holding the coding (empty when none does)."""
        found = self._lookups.get(coding)
        if found is None:
            found = self._resolve(coding.system, coding.code)
            self._lookups[coding] = found
        return found

    def _resolve(self, system: str, code: str) -> frozenset[str]:
        code = normalize_code(system, code)
        found = self._exact.get((system, code), frozenset())
        if system in PREFIX_SYSTEMS and self._prefixes:
            for end in range(3, len(code) + 1):
                more = self._prefixes.get((system, code[:end]))
                if more:
                    found = found | more
        return found


def normalize_code(system: str, code: str) -> str:
    """ICD-10-CM is compared without its dot and in capitals (E11.9, e119 and E119 match)."""
    code = code.strip()
    if system == "icd-10-cm":
        return code.replace(".", "").upper()
    return code


Document = Mapping[str, Any]


def _named(docs: Iterable[Document] | Mapping[str, Document], kind: str) -> list[tuple[str, Any]]:
    if isinstance(docs, Mapping):
        return [(str(name), doc) for name, doc in docs.items()]
    named = []
    for number, doc in enumerate(docs):
        ident = doc.get("id") if isinstance(doc, Mapping) else None
        named.append((f"{kind} {ident}" if isinstance(ident, str) else f"{kind} #{number}", doc))
    return named


def parse_library(
    measure_docs: Iterable[Document] | Mapping[str, Document],
    value_set_docs: Iterable[Document] | Mapping[str, Document],
) -> MeasureLibrary:
    """Validate and compile measure and value-set documents (parsed JSON) into a library.

    Either argument is a sequence of documents (errors name a document by its id) or a
    mapping from a source name such as the file name to the document. Measures keep the
    order given. Raises `MeasureLibraryError` naming the document and the field.
    """
    value_sets: dict[str, ValueSet] = {}
    for where, doc in _named(value_set_docs, "value set"):
        vs = _value_set(where, doc)
        if vs.id in value_sets:
            raise MeasureLibraryError(where, "id", f"duplicate value set id {vs.id!r}")
        value_sets[vs.id] = vs
    measures: list[Measure] = []
    seen: set[str] = set()
    for where, doc in _named(measure_docs, "measure"):
        measure = _Measure(where, doc, value_sets).build()
        if measure.id in seen:
            raise MeasureLibraryError(where, "id", f"duplicate measure id {measure.id!r}")
        seen.add(measure.id)
        measures.append(measure)
    return MeasureLibrary(tuple(measures), value_sets)


def _object(where: str, field: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MeasureLibraryError(where, field, "must be an object")
    return value


def _keys(where: str, field: str, value: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise MeasureLibraryError(where, field, f"unknown field(s) {', '.join(unknown)}")


def _text(where: str, field: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MeasureLibraryError(where, field, "must be a non-empty string")
    return value


def _list(where: str, field: str, value: Any, *, allow_empty: bool = False) -> Sequence[Any]:
    if not isinstance(value, list):
        raise MeasureLibraryError(where, field, "must be a list")
    if not value and not allow_empty:
        raise MeasureLibraryError(where, field, "must not be empty")
    return value


def _whole(where: str, field: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MeasureLibraryError(where, field, f"must be a whole number from {low} to {high}")
    return value


def _number(where: str, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MeasureLibraryError(where, field, "must be a number")
    return float(value)


def _months(where: str, field: str, value: Any) -> int:
    """A span written {"months": n} or {"years": n}, in months (at least one)."""
    span = _object(where, field, value)
    _keys(where, field, span, {"months", "years"})
    if len(span) != 1:
        raise MeasureLibraryError(where, field, "give exactly one of months or years")
    if "years" in span:
        return _whole(where, f"{field}.years", span["years"], 1, MAX_INTERVAL_MONTHS // 12) * 12
    return _whole(where, f"{field}.months", span["months"], 1, MAX_INTERVAL_MONTHS)


def _value_set(where: str, raw: Any) -> ValueSet:
    doc = _object(where, "(document)", raw)
    _keys(where, "(document)", doc, {"id", "version", "title", "source", "codes", "code_prefixes"})
    ident = _text(where, "id", doc.get("id"))
    where = f"{where} ({ident})" if ident not in where else where
    codes: dict[str, frozenset[str]] = {}
    for system, listed in _object(where, "codes", doc.get("codes")).items():
        if system not in CODE_SYSTEMS:
            raise MeasureLibraryError(where, f"codes.{system}", "unknown code system")
        values = _list(where, f"codes.{system}", listed)
        normalized = [normalize_code(system, _text(where, f"codes.{system}", c)) for c in values]
        if len(set(normalized)) != len(normalized):
            raise MeasureLibraryError(where, f"codes.{system}", "lists a code twice")
        codes[system] = frozenset(normalized)
    prefixes: dict[str, tuple[str, ...]] = {}
    for system, listed in _object(where, "code_prefixes", doc.get("code_prefixes", {})).items():
        if system not in PREFIX_SYSTEMS:
            raise MeasureLibraryError(
                where, f"code_prefixes.{system}", "prefixes are only meaningful for icd-10-cm"
            )
        starts = [
            normalize_code(system, _text(where, f"code_prefixes.{system}", c))
            for c in _list(where, f"code_prefixes.{system}", listed)
        ]
        if any(len(s) < 3 for s in starts):
            raise MeasureLibraryError(
                where, f"code_prefixes.{system}", "a prefix is at least a category (3 characters)"
            )
        prefixes[system] = tuple(starts)
    if not codes and not prefixes:
        raise MeasureLibraryError(where, "codes", "a value set needs at least one code")
    return ValueSet(
        id=ident,
        version=_text(where, "version", doc.get("version")),
        title=_text(where, "title", doc.get("title")),
        source=_text(where, "source", doc.get("source")),
        codes=codes,
        code_prefixes=prefixes,
    )


class _Measure:
    """Builds one Measure, remembering the document's name and the value sets it uses."""

    def __init__(self, where: str, raw: Any, value_sets: Mapping[str, ValueSet]) -> None:
        self.doc = _object(where, "(document)", raw)
        ident = self.doc.get("id")
        self.where = (
            f"{where} ({ident})" if isinstance(ident, str) and ident not in where else where
        )
        self.value_sets = value_sets
        self.used: dict[str, None] = {}

    def fail(self, field: str, problem: str) -> MeasureLibraryError:
        return MeasureLibraryError(self.where, field, problem)

    def value_set(self, field: str, value: Any) -> str:
        ident = _text(self.where, field, value)
        if ident not in self.value_sets:
            raise self.fail(field, f"unknown value set {ident!r}")
        self.used[ident] = None
        return ident

    def build(self) -> Measure:
        doc, w = self.doc, self.where
        _keys(
            w,
            "(document)",
            doc,
            {"id", "version", "title", "source", "population", "exclusions", "numerator"}
            | {"met_reason", "notes"},
        )
        ident = _text(w, "id", doc.get("id"))
        if "notes" in doc:
            _text(w, "notes", doc["notes"])
        population = _object(w, "population", doc.get("population"))
        _keys(w, "population", population, {"any_of"})
        groups = _list(w, "population.any_of", population.get("any_of"))
        criteria = tuple(self.criteria(f"population.any_of[{i}]", g) for i, g in enumerate(groups))
        exclusions = tuple(
            self.exclusion(f"exclusions[{i}]", e)
            for i, e in enumerate(
                _list(w, "exclusions", doc.get("exclusions", []), allow_empty=True)
            )
        )
        numerator = _object(w, "numerator", doc.get("numerator"))
        _keys(w, "numerator", numerator, {"all_of"})
        requirements = tuple(
            self.requirement(f"numerator.all_of[{i}]", r)
            for i, r in enumerate(_list(w, "numerator.all_of", numerator.get("all_of")))
        )
        return Measure(
            id=ident,
            version=_text(w, "version", doc.get("version")),
            title=_text(w, "title", doc.get("title")),
            source=_text(w, "source", doc.get("source")),
            population=criteria,
            exclusions=exclusions,
            requirements=requirements,
            met_reason=_text(w, "met_reason", doc.get("met_reason")),
            value_set_ids=tuple(self.used),
        )

    def criteria(self, field: str, raw: Any) -> Criteria:
        w = self.where
        group = _object(w, field, raw)
        _keys(w, field, group, {"age", "sex", "conditions", "coverage", "observations"})
        low: int | None = None
        high: int | None = None
        if "age" in group:
            age = _object(w, f"{field}.age", group["age"])
            _keys(w, f"{field}.age", age, {"min_years", "min_months", "max_years"})
            if "min_years" in age and "min_months" in age:
                raise self.fail(f"{field}.age", "give min_years or min_months, not both")
            if "min_years" in age:
                low = _whole(w, f"{field}.age.min_years", age["min_years"], 0, MAX_AGE_YEARS) * 12
            elif "min_months" in age:
                low = _whole(w, f"{field}.age.min_months", age["min_months"], 0, MAX_AGE_YEARS * 12)
            if "max_years" in age:
                top = _whole(w, f"{field}.age.max_years", age["max_years"], 0, MAX_AGE_YEARS)
                high = (top + 1) * 12
                if low is not None and high <= low:
                    raise self.fail(f"{field}.age", "max_years is below the minimum age")
        sexes: frozenset[str] | None = None
        if "sex" in group:
            listed = _list(w, f"{field}.sex", group["sex"])
            if not set(listed) <= SEXES:
                raise self.fail(f"{field}.sex", f"must be among {', '.join(sorted(SEXES))}")
            sexes = frozenset(listed)
        conditions = tuple(
            self.value_set(f"{field}.conditions[{i}]", v)
            for i, v in enumerate(
                _list(w, f"{field}.conditions", group.get("conditions", []), allow_empty=True)
            )
        )
        coverage: frozenset[str] | None = None
        if "coverage" in group:
            coverage = frozenset(
                _text(w, f"{field}.coverage", c)
                for c in _list(w, f"{field}.coverage", group["coverage"])
            )
        observations = []
        for i, raw_obs in enumerate(
            _list(w, f"{field}.observations", group.get("observations", []), allow_empty=True)
        ):
            where = f"{field}.observations[{i}]"
            obs = _object(w, where, raw_obs)
            component = self.component(where, obs, extra=frozenset({"reason"}))
            if component.below is None and component.at_least is None:
                raise self.fail(where, "needs below or at_least")
            observations.append(
                ObservationCriterion(component, _text(w, f"{where}.reason", obs.get("reason")))
            )
        return Criteria(low, high, sexes, conditions, coverage, tuple(observations))

    def component(
        self, field: str, obs: Mapping[str, Any], extra: frozenset[str] = frozenset()
    ) -> Component:
        w = self.where
        _keys(w, field, obs, {"value_set", "unit", "convert", "below", "at_least"} | extra)
        convert: dict[str, tuple[float, float]] = {}
        for unit, rule in _object(w, f"{field}.convert", obs.get("convert", {})).items():
            spec = _object(w, f"{field}.convert.{unit}", rule)
            _keys(w, f"{field}.convert.{unit}", spec, {"scale", "offset"})
            convert[unit] = (
                _number(w, f"{field}.convert.{unit}.scale", spec.get("scale")),
                _number(w, f"{field}.convert.{unit}.offset", spec.get("offset", 0)),
            )
        target = obs.get("unit")
        if convert and target is None:
            raise self.fail(f"{field}.unit", "a conversion needs the target unit")
        return Component(
            value_set=self.value_set(f"{field}.value_set", obs.get("value_set")),
            unit=None if target is None else _text(w, f"{field}.unit", target),
            convert=convert,
            below=None if "below" not in obs else _number(w, f"{field}.below", obs["below"]),
            at_least=None
            if "at_least" not in obs
            else _number(w, f"{field}.at_least", obs["at_least"]),
        )

    def exclusion(self, field: str, raw: Any) -> Exclusion:
        w = self.where
        ex = _object(w, field, raw)
        _keys(w, field, ex, {"value_set", "reason", "lookback", "min_count", "latest_at_least_ago"})
        if "lookback" in ex and "latest_at_least_ago" in ex:
            raise self.fail(field, "give lookback or latest_at_least_ago, not both")
        return Exclusion(
            value_set=self.value_set(f"{field}.value_set", ex.get("value_set")),
            reason=_text(w, f"{field}.reason", ex.get("reason")),
            lookback_months=_months(w, f"{field}.lookback", ex["lookback"])
            if "lookback" in ex
            else None,
            min_count=_whole(w, f"{field}.min_count", ex.get("min_count", 1), 1, 10),
            latest_at_least_months=(
                _months(w, f"{field}.latest_at_least_ago", ex["latest_at_least_ago"])
                if "latest_at_least_ago" in ex
                else None
            ),
        )

    def requirement(self, field: str, raw: Any) -> Requirement:
        w = self.where
        req = _object(w, field, raw)
        _keys(w, field, req, {"any_of", "reason"})
        alternatives = tuple(
            self.alternative(f"{field}.any_of[{i}]", a)
            for i, a in enumerate(_list(w, f"{field}.any_of", req.get("any_of")))
        )
        return Requirement(alternatives, _text(w, f"{field}.reason", req.get("reason")))

    def alternative(self, field: str, raw: Any) -> Alternative:
        w = self.where
        alt = _object(w, field, raw)
        _keys(w, field, alt, {"value_sets", "interval", "season", "once", "min_age", "result"})
        value_sets = tuple(
            self.value_set(f"{field}.value_sets[{i}]", v)
            for i, v in enumerate(_list(w, f"{field}.value_sets", alt.get("value_sets")))
        )
        timing = [k for k in ("interval", "season", "once") if k in alt]
        if len(timing) != 1:
            raise self.fail(field, "give exactly one of interval, season or once")
        interval = _months(w, f"{field}.interval", alt["interval"]) if "interval" in alt else None
        season: int | None = None
        if "season" in alt:
            spec = _object(w, f"{field}.season", alt["season"])
            _keys(w, f"{field}.season", spec, {"start_month"})
            season = _whole(w, f"{field}.season.start_month", spec.get("start_month"), 1, 12)
        if "once" in alt and alt["once"] is not True:
            raise self.fail(f"{field}.once", "must be true")
        min_age: int | None = None
        if "min_age" in alt:
            spec = _object(w, f"{field}.min_age", alt["min_age"])
            _keys(w, f"{field}.min_age", spec, {"years"})
            min_age = _whole(w, f"{field}.min_age.years", spec.get("years"), 0, MAX_AGE_YEARS) * 12
        result: ResultRule | None = None
        if "result" in alt:
            if len(value_sets) != 1:
                raise self.fail(f"{field}.result", "a result is read from one value set")
            spec = _object(w, f"{field}.result", alt["result"])
            _keys(w, f"{field}.result", spec, {"components", "require_value", "reason"})
            components = tuple(
                self.component(
                    f"{field}.result.components[{i}]",
                    _object(w, f"{field}.result.components[{i}]", c),
                )
                for i, c in enumerate(
                    _list(w, f"{field}.result.components", spec.get("components"))
                )
            )
            for i, c in enumerate(components):
                if c.below is None and c.at_least is None:
                    raise self.fail(f"{field}.result.components[{i}]", "needs below or at_least")
            require = spec.get("require_value", False)
            if not isinstance(require, bool):
                raise self.fail(f"{field}.result.require_value", "must be true or false")
            result = ResultRule(
                components, require, _text(w, f"{field}.result.reason", spec.get("reason"))
            )
        return Alternative(value_sets, interval, season, "once" in alt, min_age, result)
