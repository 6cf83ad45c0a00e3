"""What the evaluator reads: a patient's demographics and clinical facts, as plain values.

The store builds these from what care-gaps keeps (decrypted demographics, the facts the
patients service published); the evaluator never sees a row, an event or a FHIR object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal

FactKind = Literal[
    "condition", "observation", "procedure", "immunization", "medication-statement", "encounter"
]
Sex = Literal["female", "male", "other", "unknown"]


@dataclass(frozen=True, slots=True)
class Coding:
    system: str
    """Short code-system name: icd-10-cm, snomed-ct, loinc, cpt, hcpcs, cvx, rxnorm."""
    code: str


@dataclass(frozen=True, slots=True)
class Quantity:
    value: float
    unit: str
    """UCUM unit code."""
    code: Coding | None = None
    """The component's code (systolic 8480-6, ...); None: the observation's own value."""


@dataclass(frozen=True, slots=True)
class Fact:
    fact_id: str
    kind: FactKind
    status: str
    codes: tuple[Coding, ...]
    effective_on: date
    effective_until: date | None = None
    quantities: tuple[Quantity, ...] = ()


@dataclass(frozen=True, slots=True)
class PatientProfile:
    patient_id: str
    birth_date: date | None
    sex: Sex | None
    facts: tuple[Fact, ...] = field(default=())
    coverage: tuple[str, ...] = ()
    """Kinds of coverage the patient has (lower case, e.g. "medicare", "medicaid",
    "commercial"); the annual wellness visit's population is "medicare"."""
