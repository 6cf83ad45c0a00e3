"""The plaintext of care-gaps' sealed fields, as JSON: demographics, a normalized fact,
a gap's evidence. Sealing and opening is the field port's (the use cases call it); this
is only what goes in and comes out."""

from __future__ import annotations

import json
from datetime import date
from typing import Any, cast

from careloop_caregaps.domain.facts import Coding, Fact, FactKind, Quantity, Sex

SEXES = frozenset({"female", "male", "other", "unknown"})


def demographics_text(birth_date: date | None, sex: str | None) -> str:
    return json.dumps(
        {"birth_date": None if birth_date is None else birth_date.isoformat(), "sex": sex}
    )


def demographics_of(text: str) -> tuple[date | None, Sex | None]:
    data = json.loads(text)
    birth = data.get("birth_date")
    sex = data.get("sex")
    return (
        None if birth is None else date.fromisoformat(birth),
        cast(Sex, sex) if sex in SEXES else None,
    )


def fact_text(fact: Fact) -> str:
    return json.dumps(
        {
            "kind": fact.kind,
            "status": fact.status,
            "codes": [[c.system, c.code] for c in fact.codes],
            "effective_on": fact.effective_on.isoformat(),
            "effective_until": None
            if fact.effective_until is None
            else fact.effective_until.isoformat(),
            "quantities": [
                {
                    "value": q.value,
                    "unit": q.unit,
                    "code": None if q.code is None else [q.code.system, q.code.code],
                }
                for q in fact.quantities
            ],
        },
        separators=(",", ":"),
    )


def _quantity(data: dict[str, Any]) -> Quantity:
    code = data.get("code")
    return Quantity(
        value=float(data["value"]),
        unit=str(data["unit"]),
        code=None if code is None else Coding(code[0], code[1]),
    )


def fact_of(fact_id: str, text: str) -> Fact:
    data = json.loads(text)
    until = data.get("effective_until")
    return Fact(
        fact_id=fact_id,
        kind=cast(FactKind, data["kind"]),
        status=data["status"],
        codes=tuple(Coding(system, code) for system, code in data["codes"]),
        effective_on=date.fromisoformat(data["effective_on"]),
        effective_until=None if until is None else date.fromisoformat(until),
        quantities=tuple(_quantity(q) for q in data.get("quantities", ())),
    )


def evidence_text(opened_by: tuple[str, ...], closed_by: tuple[str, ...]) -> str:
    return json.dumps({"opened_by": list(opened_by), "closed_by": list(closed_by)})


def evidence_of(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    data = json.loads(text)
    return tuple(data.get("opened_by", ())), tuple(data.get("closed_by", ()))
