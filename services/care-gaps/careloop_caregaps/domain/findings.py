"""What one evaluation of one measure for one patient concludes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

Outcome = Literal["met", "gap", "excluded", "not-applicable"]
"""`met`: in the population with current evidence; `gap`: in the population without it
(or it ran out, or the latest value is out of range); `excluded`: an exclusion applies;
`not-applicable`: outside the measure's population on that day."""


@dataclass(frozen=True, slots=True)
class Finding:
    measure_id: str
    measure_version: str
    outcome: Outcome
    due_on: date | None
    """Last completion + interval (when it is, or was, due); None: never completed."""
    evidence: tuple[str, ...]
    """Fact ids behind the outcome: the completion for `met`, the exclusion for
    `excluded`, the out-of-range result for a `gap` that has one; () otherwise."""
    reason: str
    """A short code-like reason shown to staff (`no-hba1c-in-12-months`, `hba1c-8-or-over`,
    `bilateral-mastectomy`); never free text about the patient."""
