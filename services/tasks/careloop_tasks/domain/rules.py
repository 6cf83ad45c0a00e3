"""Rules as data: "on event type X (whose fields match), create a task of kind K in the
queue of role R at the event's location, with priority P, due in D", or "escalate the
task another rule created for the same subject".

The service ships default rules (`default_rules.json`); an organization may replace them
with its own set through the API. Both go through `parse_rules`, so a set that would fail
at the first event is refused when it is loaded or saved.

A rule's task has a dedup key (rule, subject and the fields the rule names, such as a
referral's stage and version): a redelivered or replayed event, or a rule run twice,
finds the task it made before instead of making a second one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from careloop_tasks.domain.task import Priority
from careloop_tasks.domain.titles import TEMPLATES

Action = Literal["create", "escalate"]
_ACTIONS: tuple[Action, ...] = ("create", "escalate")
MAX_DUE_HOURS = 24 * 365


class InvalidRules(ValueError):
    """A rule set that cannot be used; the message names the rule and what is wrong."""


@dataclass(frozen=True)
class DueIn:
    """How long a task has: `default_hours`, or per value of the event's field `by`."""

    default_hours: float
    by: str | None = None
    hours: Mapping[str, float] = field(default_factory=dict)

    def for_event(self, fields: Mapping[str, Any]) -> timedelta:
        value = fields.get(self.by) if self.by else None
        hours = self.hours.get(str(value), self.default_hours) if value is not None else None
        return timedelta(hours=self.default_hours if hours is None else hours)


@dataclass(frozen=True)
class Rule:
    id: str
    on: str
    """The event type the rule reacts to."""
    action: Action
    kind: str = "general"
    queue_role: str = ""
    priority: Priority = Priority.NORMAL
    due_in: DueIn = DueIn(24)
    subject_kind: str | None = None
    subject_field: str | None = None
    dedup_on: tuple[str, ...] = ()
    match: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    target: str | None = None
    """For `escalate`: the id of the `create` rule whose task is escalated."""

    def matches(self, event_type: str, fields: Mapping[str, Any]) -> bool:
        if event_type != self.on:
            return False
        return all(str(fields.get(name)) in accepted for name, accepted in self.match.items())

    def dedup_key(self, fields: Mapping[str, Any]) -> str:
        """The key of the one task this (create) rule makes for the event's subject."""
        subject = str(fields.get(self.subject_field)) if self.subject_field else "-"
        parts = [self.id, self.subject_kind or "-", subject]
        parts += [f"{name}={fields.get(name)}" for name in self.dedup_on]
        return "|".join(parts)


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]

    def by_id(self, rule_id: str) -> Rule:
        return next(rule for rule in self.rules if rule.id == rule_id)

    def for_event(self, event_type: str, fields: Mapping[str, Any]) -> list[Rule]:
        """The rules an event sets off, in the set's order."""
        return [rule for rule in self.rules if rule.matches(event_type, fields)]

    def creator_of(self, rule: Rule) -> Rule:
        """The `create` rule whose task `rule` acts on (the rule itself for `create`)."""
        return rule if rule.target is None else self.by_id(rule.target)


def _text(raw: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidRules(f"{where}: `{key}` must be a non-empty string.")
    return value


def _hours(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRules(f"{where}: hours must be a number.")
    if not 0 < value <= MAX_DUE_HOURS:
        raise InvalidRules(f"{where}: hours must be above 0 and at most {MAX_DUE_HOURS}.")
    return float(value)


def _due_in(raw: object, where: str) -> DueIn:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return DueIn(_hours(raw, where))
    if not isinstance(raw, Mapping) or "default" not in raw:
        raise InvalidRules(f"{where}: `due_in_hours` is a number or an object with `default`.")
    by = raw.get("by")
    if by is not None and not isinstance(by, str):
        raise InvalidRules(f"{where}: `due_in_hours.by` must name an event field.")
    per_value = {
        str(k): _hours(v, f"{where} ({k})") for k, v in raw.items() if k not in ("by", "default")
    }
    return DueIn(_hours(raw["default"], where), by, per_value)


def _match(raw: object, where: str) -> dict[str, tuple[str, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidRules(f"{where}: `match` maps event fields to a value or a list of values.")
    accepted: dict[str, tuple[str, ...]] = {}
    for name, value in raw.items():
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str | int) for v in values):
            raise InvalidRules(f"{where}: `match.{name}` must be a value or a list of values.")
        accepted[str(name)] = tuple(str(v) for v in values)
    return accepted


def _rule(raw: object, index: int, known_events: Collection[str]) -> Rule:
    where = f"rule {index + 1}"
    if not isinstance(raw, Mapping):
        raise InvalidRules(f"{where}: a rule is an object.")
    rule_id = _text(raw, "id", where)
    where = f"rule {rule_id!r}"
    on = _text(raw, "on", where)
    if on not in known_events:
        raise InvalidRules(
            f"{where}: the service does not consume {on!r}; it consumes {sorted(known_events)}."
        )
    action = raw.get("action", "create")
    if action not in _ACTIONS:
        raise InvalidRules(f"{where}: `action` is one of {list(_ACTIONS)}.")
    match = _match(raw.get("match"), where)
    if action == "escalate":
        return Rule(
            id=rule_id or "",
            on=on or "",
            action="escalate",
            match=match,
            target=_text(raw, "target", where),
        )
    kind = _text(raw, "kind", where) or ""
    if kind not in TEMPLATES:
        raise InvalidRules(f"{where}: no task kind {kind!r}; the kinds are {sorted(TEMPLATES)}.")
    priority = raw.get("priority", Priority.NORMAL.value)
    if priority not in {p.value for p in Priority}:
        raise InvalidRules(f"{where}: `priority` is one of {[p.value for p in Priority]}.")
    subject = raw.get("subject")
    if subject is not None and not isinstance(subject, Mapping):
        raise InvalidRules(f"{where}: `subject` is an object with `kind` and `field`.")
    dedup_on = raw.get("dedup_on", [])
    if not isinstance(dedup_on, list) or not all(isinstance(f, str) for f in dedup_on):
        raise InvalidRules(f"{where}: `dedup_on` is a list of event fields.")
    return Rule(
        id=rule_id or "",
        on=on or "",
        action="create",
        kind=kind,
        queue_role=_text(raw, "queue_role", where) or "",
        priority=Priority(priority),
        due_in=_due_in(raw.get("due_in_hours", 24), where),
        subject_kind=_text(subject, "kind", where) if subject else None,
        subject_field=_text(subject, "field", where) if subject else None,
        dedup_on=tuple(dedup_on),
        match=match,
    )


def parse_rules(document: object, *, known_events: Collection[str]) -> RuleSet:
    """The rule set of a document `{"rules": [...]}`, or `InvalidRules`."""
    if not isinstance(document, Mapping) or not isinstance(document.get("rules"), list):
        raise InvalidRules('A rule set is an object with a list of rules: {"rules": [...]}.')
    raw_rules: Sequence[object] = document["rules"]
    rules = tuple(_rule(raw, i, known_events) for i, raw in enumerate(raw_rules))
    ids = [rule.id for rule in rules]
    if len(set(ids)) != len(ids):
        raise InvalidRules("Two rules have the same id.")
    creators = {rule.id for rule in rules if rule.action == "create"}
    for rule in rules:
        if rule.action == "escalate" and rule.target not in creators:
            raise InvalidRules(
                f"rule {rule.id!r}: `target` must name a create rule of the set, not "
                f"{rule.target!r}."
            )
    return RuleSet(rules)
