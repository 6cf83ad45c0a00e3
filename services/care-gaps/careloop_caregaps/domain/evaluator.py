"""Evaluate every measure of a library for one patient on one day.

Pure and deterministic: the same library, profile and day give the same findings. The
patient's facts are indexed by value set once, then each measure reads that index.

Which facts count (on `as_of`):
- never a fact whose status is entered-in-error, not-done, not-taken or cancelled, nor
  one dated after `as_of` (it had not happened on the measurement date);
- a condition only while active: not resolved, inactive or in remission, and not abated
  before `as_of`; population conditions are read from condition facts only;
- a fact's completion day is its `effective_on`, or the end of its period
  (`effective_until`, at most `as_of`) when it has one; an active medication statement
  without an end, and an active condition, last until `as_of`.

Outcomes, in order: `not-applicable` when no population group holds; `excluded` when an
exclusion applies; otherwise `met` when every numerator requirement has current evidence,
else `gap`. Evidence holds until its due date: due = completion + interval (the due date
itself is a gap: the test is due that day), the start of the next season for seasonal
evidence, never for once-only evidence. A requirement with a `result` reads the latest
day with readings; on that day the lowest value of each component counts (as CMS165 does
for blood pressure); a value at or over a `below` threshold is a gap with the result's
reason and that day's facts as evidence, its due date still completion + interval. A
reading without a value (a CPT 83036 claim) shows the test was done: it meets the
requirement unless the result says `require_value`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from careloop_caregaps.domain.dates import add_months, age_in_months, season_start
from careloop_caregaps.domain.facts import Coding, Fact, PatientProfile
from careloop_caregaps.domain.findings import Finding
from careloop_caregaps.domain.library import (
    Alternative,
    Component,
    Criteria,
    Exclusion,
    Measure,
    MeasureLibrary,
    Requirement,
)

IGNORED_STATUSES = frozenset({"entered-in-error", "not-done", "not-taken", "cancelled"})
INACTIVE_CONDITION_STATUSES = frozenset({"resolved", "inactive", "remission"})

# An indexed fact: (completion day, effective_on, fact).
_Entry = tuple[date, date, Fact]
_Index = dict[str, list[_Entry]]
_NONE: tuple[str, ...] = ()
_Lookup = Callable[[Coding], frozenset[str]]


def evaluate(library: MeasureLibrary, profile: PatientProfile, as_of: date) -> tuple[Finding, ...]:
    """One Finding per measure of the library, in library order, for `profile` on `as_of`."""
    lookup = library.value_sets_of
    index = _index(lookup, profile, as_of)
    age = None if profile.birth_date is None else age_in_months(profile.birth_date, as_of)
    return tuple(
        _evaluate_measure(measure, index, profile, age, as_of, lookup)
        for measure in library.measures
    )


def _index(lookup: _Lookup, profile: PatientProfile, as_of: date) -> _Index:
    index: _Index = {}
    for fact in profile.facts:
        status = fact.status
        if status in IGNORED_STATUSES or fact.effective_on > as_of:
            continue
        until = fact.effective_until
        if fact.kind == "condition":
            if status in INACTIVE_CONDITION_STATUSES or (until is not None and until < as_of):
                continue
            done = as_of
        elif until is not None:
            done = until if until < as_of else as_of
        elif fact.kind == "medication-statement" and status == "active":
            done = as_of
        else:
            done = fact.effective_on
        entry = (done, fact.effective_on, fact)
        codes = fact.codes
        if len(codes) == 1 and not fact.quantities:
            for vs in lookup(codes[0]):
                bucket = index.get(vs)
                if bucket is None:
                    index[vs] = [entry]
                else:
                    bucket.append(entry)
            continue
        # A fact with several codings (or component codes) joins each value set once; a
        # bucket keeps the profile's fact order whatever order the set iterates in.
        ids: set[str] = set()
        for coding in codes:
            ids.update(lookup(coding))
        for quantity in fact.quantities:
            if quantity.code is not None:
                ids.update(lookup(quantity.code))
        for vs in ids:
            bucket = index.get(vs)
            if bucket is None:
                index[vs] = [entry]
            else:
                bucket.append(entry)
    return index


def _evaluate_measure(
    measure: Measure,
    index: _Index,
    profile: PatientProfile,
    age: int | None,
    as_of: date,
    lookup: _Lookup,
) -> Finding:
    reason = None
    for criteria in measure.population:
        failed = _population_fails(criteria, index, profile, age, lookup)
        if failed is None:
            break
        if reason is None:
            reason = failed
    else:
        return Finding(measure.id, measure.version, "not-applicable", None, _NONE, reason or "")
    for exclusion in measure.exclusions:
        evidence = _excluded_by(exclusion, index, as_of)
        if evidence:
            return Finding(
                measure.id, measure.version, "excluded", None, evidence, exclusion.reason
            )
    birth = profile.birth_date
    due_dates: list[date] = []
    evidence_ids: list[str] = []
    for requirement in measure.requirements:
        outcome, due, evidence, why = _requirement(requirement, index, birth, as_of, lookup)
        if outcome != "met":
            return Finding(measure.id, measure.version, "gap", due, evidence, why)
        if due is not None:
            due_dates.append(due)
        evidence_ids.extend(evidence)
    return Finding(
        measure.id,
        measure.version,
        "met",
        min(due_dates) if due_dates else None,
        tuple(evidence_ids),
        measure.met_reason,
    )


def _population_fails(
    criteria: Criteria, index: _Index, profile: PatientProfile, age: int | None, lookup: _Lookup
) -> str | None:
    """None when the patient is in this population group, else the not-applicable reason."""
    if criteria.min_age_months is not None or criteria.max_age_months is not None:
        if age is None:
            return "birth-date-unknown"
        if criteria.min_age_months is not None and age < criteria.min_age_months:
            return "age-not-eligible"
        if criteria.max_age_months is not None and age >= criteria.max_age_months:
            return "age-not-eligible"
    if criteria.sexes is not None and profile.sex not in criteria.sexes:
        return "sex-not-eligible"
    if criteria.coverage is not None and not any(c in criteria.coverage for c in profile.coverage):
        return "coverage-not-eligible"
    if criteria.conditions and not any(
        entry[2].kind == "condition" for vs in criteria.conditions for entry in index.get(vs, ())
    ):
        return "no-qualifying-condition"
    for observation in criteria.observations:
        entries = index.get(observation.component.value_set)
        if not entries:
            return observation.reason
        latest = max(entries, key=_by_day)
        value = _value(observation.component, latest[2], lookup)
        if value is None or not _within(observation.component, value):
            return observation.reason
    return None


def _excluded_by(exclusion: Exclusion, index: _Index, as_of: date) -> tuple[str, ...]:
    entries = index.get(exclusion.value_set)
    if not entries:
        return _NONE
    if exclusion.latest_at_least_months is not None:
        latest = max(entries, key=_by_day)
        if latest[1] <= add_months(as_of, -exclusion.latest_at_least_months):
            return (latest[2].fact_id,)
        return _NONE
    if exclusion.lookback_months is not None:
        start = add_months(as_of, -exclusion.lookback_months)
        entries = [e for e in entries if e[0] > start]
    if len(entries) < exclusion.min_count:
        return _NONE
    return tuple(e[2].fact_id for e in entries)


def _by_done(entry: _Entry) -> tuple[date, date, str]:
    return (entry[0], entry[1], entry[2].fact_id)


def _by_day(entry: _Entry) -> tuple[date, date, str]:
    # Ties on the day break on the fact id so the choice never depends on fact order.
    return (entry[1], entry[0], entry[2].fact_id)


def _requirement(
    requirement: Requirement, index: _Index, birth: date | None, as_of: date, lookup: _Lookup
) -> tuple[str, date | None, tuple[str, ...], str]:
    """(met | gap, due date, evidence, reason) of one requirement's best alternative."""
    best_due: date | None = None
    out_of_range: tuple[date | None, tuple[str, ...], str] | None = None
    for alternative in requirement.alternatives:
        found = _alternative(alternative, index, birth, lookup)
        if found is None:
            continue
        done, evidence, failed = found
        if alternative.once:
            if failed is None:
                return "met", None, evidence, ""
            continue
        if alternative.season_start_month is not None:
            due = add_months(season_start(done, alternative.season_start_month), 12)
        else:
            due = add_months(done, alternative.interval_months or 0)
        if due > as_of:
            if failed is None:
                return "met", due, evidence, ""
            if out_of_range is None:
                out_of_range = (due, evidence, failed)
        if best_due is None or due > best_due:
            best_due = due
    if out_of_range is not None:
        return "gap", out_of_range[0], out_of_range[1], out_of_range[2]
    return "gap", best_due, _NONE, requirement.reason


def _alternative(
    alternative: Alternative, index: _Index, birth: date | None, lookup: _Lookup
) -> tuple[date, tuple[str, ...], str | None] | None:
    """(completion day, evidence, result failure or None) of the latest evidence, or None."""
    if alternative.result is not None:
        return _result(alternative, index, birth, lookup)
    done: date | None = None
    evidence: list[str] = []
    for vs in alternative.value_sets:
        entries = index.get(vs)
        if not entries:
            return None
        if alternative.min_age_months is not None:
            if birth is None:
                return None
            entries = [
                e for e in entries if age_in_months(birth, e[1]) >= alternative.min_age_months
            ]
            if not entries:
                return None
        latest = max(entries, key=_by_done)
        evidence.append(latest[2].fact_id)
        # A series is complete on its last part's day, so it holds from its earliest latest part.
        if done is None or latest[0] < done:
            done = latest[0]
    if done is None:
        return None
    return done, tuple(evidence), None


def _result(
    alternative: Alternative, index: _Index, birth: date | None, lookup: _Lookup
) -> tuple[date, tuple[str, ...], str | None] | None:
    rule = alternative.result
    assert rule is not None
    entries = index.get(alternative.value_sets[0])
    if not entries:
        return None
    if alternative.min_age_months is not None:
        if birth is None:
            return None
        entries = [e for e in entries if age_in_months(birth, e[1]) >= alternative.min_age_months]
    days = sorted({e[1] for e in entries}, reverse=True)
    for day in days:
        on_day = sorted((e[2] for e in entries if e[1] == day), key=_fact_id)
        lowest: list[float | None] = []
        for component in rule.components:
            values = [v for f in on_day if (v := _value(component, f, lookup)) is not None]
            lowest.append(min(values) if values else None)
        ids = tuple(f.fact_id for f in on_day)
        if any(v is None for v in lowest):
            if rule.require_value:
                continue
            if all(v is None for v in lowest):
                return day, ids, None
        for component, value in zip(rule.components, lowest, strict=True):
            if value is not None and not _within(component, value):
                return day, ids, rule.reason
        return day, ids, None
    return None


def _fact_id(fact: Fact) -> str:
    return fact.fact_id


def _value(component: Component, fact: Fact, lookup: _Lookup) -> float | None:
    """The fact's value for the component: a component quantity whose code is in the
    component's value set, else the fact's own value when its code is; in the component's
    unit (converted when the document says how), or None."""
    own = None
    for quantity in fact.quantities:
        code = quantity.code
        if code is None:
            if own is None:
                own = quantity
        elif component.value_set in lookup(code):
            return _in_unit(component, quantity.value, quantity.unit)
    if own is not None:
        for coding in fact.codes:
            if component.value_set in lookup(coding):
                return _in_unit(component, own.value, own.unit)
    return None


def _in_unit(component: Component, value: float, unit: str) -> float | None:
    if component.unit is None or unit == component.unit:
        return value
    rule = component.convert.get(unit)
    if rule is None:
        return None
    return value * rule[0] + rule[1]


def _within(component: Component, value: float) -> bool:
    if component.below is not None and value >= component.below:
        return False
    return component.at_least is None or value >= component.at_least
