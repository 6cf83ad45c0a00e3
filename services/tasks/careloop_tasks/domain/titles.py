"""Task titles come from their kind's template, never from free text.

A title is shown in worklists, counts and notifications to anyone working the queue, so
it must hold no PHI: the templates name only codes (a referral's stage), and a value put
into a template must itself look like a code (lower-case words and hyphens: no digits,
so no record number, date, phone or address gets in). Whatever staff want to say about
the patient goes in the task's note or comments, which are sealed.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

TEMPLATES: Mapping[str, str] = {
    "referral-stalled": "Referral stalled at {stage}",
    "referral-outcome-note": "Write the outcome note of a seen referral",
    "referral-never-scheduled": "Outbound referral not scheduled: call the patient",
    "referral-scheduled-elsewhere": "Outbound referral went elsewhere: confirm care and records",
    "referral-no-report-back": "Outbound referral seen, no report back: ask for the note",
    "authorization-attention": "Referral authorization needs attention: {cause}",
    "referral-callback": "Call back a referred patient who asked to book",
    "intake-review": "Review a completed intake form",
    "no-show-risk-call": "Call a patient with a high no-show risk",
    "care-gap-call": "Call a patient about an open care gap",
    "caregap-outreach-unanswered": "Call a patient who did not answer check-up outreach",
    "follow-up": "Follow up with a patient",
    "general": "Staff task",
}
"""Every task kind and its title template."""

_CODE = re.compile(r"^[a-z]+(?:-[a-z]+)*$")


class UnsafeTitle(ValueError):
    """A title cannot be made: an unknown kind, a missing value, or a value that is not a
    code."""


def placeholders(kind: str) -> tuple[str, ...]:
    """The fields the template of `kind` names."""
    if kind not in TEMPLATES:
        raise UnsafeTitle(f"No task kind {kind!r}; the kinds are {sorted(TEMPLATES)}.")
    return tuple(name for _, name, _, _ in string.Formatter().parse(TEMPLATES[kind]) if name)


def title_for(kind: str, values: Mapping[str, object]) -> str:
    """The title of a task of `kind`, its template filled from `values`."""
    filled: dict[str, str] = {}
    for name in placeholders(kind):
        value = values.get(name)
        if not isinstance(value, str) or not _CODE.fullmatch(value):
            raise UnsafeTitle(
                f"The title of a {kind} task needs `{name}` as a code (lower-case words "
                f"and hyphens), not {type(value).__name__}."
            )
        filled[name] = value.replace("-", " ")
    return TEMPLATES[kind].format(**filled)
