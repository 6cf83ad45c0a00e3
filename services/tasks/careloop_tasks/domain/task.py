"""A task: one piece of staff work on a queue (a role at a location), with its SLA.

    open -> in-progress -> completed
      \\________\\________-> cancelled

Claiming a task puts it in progress with the claimer (an assignment, round-robin or by
staff, only names who is to do it); an open or in-progress task can be
completed (with an outcome code) or cancelled. Every change raises `version`, which the
store checks, so of two concurrent changes on one task exactly one wins.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum


class Status(StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class Outcome(StrEnum):
    RESOLVED = "resolved"
    NO_ACTION_NEEDED = "no-action-needed"
    UNREACHABLE = "unreachable"
    HANDED_OFF = "handed-off"


ACTIVE = frozenset({Status.OPEN, Status.IN_PROGRESS})
"""Statuses of work still to do: the ones that can be overdue."""


class TaskClosed(Exception):
    """The task is completed or cancelled: nothing more can happen to it."""

    def __init__(self, status: Status) -> None:
        super().__init__(f"The task is {status.value}: it cannot change any more.")
        self.status = status


def queue_name(role: str, location_id: str) -> str:
    """The queue of a role at a location: `<role>@<location id>`."""
    return f"{role}@{location_id}"


@dataclass(frozen=True)
class Task:
    id: str
    org_id: str
    location_id: str
    queue: str
    kind: str
    title: str
    priority: Priority
    status: Status
    due_at: datetime
    patient_id: str | None
    subject_kind: str | None
    subject_id: str | None
    dedup_key: str | None
    rule_id: str | None
    assignee_id: str | None
    outcome: Outcome | None
    escalated_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    def overdue_at(self, now: datetime) -> bool:
        """Whether the task is still to do and past its due time."""
        return self.is_active and self.due_at <= now


def _changed(task: Task, now: datetime, **values: object) -> Task:
    if not task.is_active:
        raise TaskClosed(task.status)
    return replace(task, version=task.version + 1, updated_at=now, **values)  # type: ignore[arg-type]


def assign(task: Task, assignee_id: str, *, now: datetime) -> Task:
    """The task given to `assignee_id`; its status stays (an open task waits for its new
    assignee to take it up, one in progress moves on with them)."""
    return _changed(task, now, assignee_id=assignee_id)


def claim(task: Task, member_id: str, *, now: datetime) -> Task:
    """The task taken up by a member of its queue: theirs, in progress."""
    return _changed(task, now, assignee_id=member_id, status=Status.IN_PROGRESS)


def complete(task: Task, outcome: Outcome, *, now: datetime) -> Task:
    return _changed(task, now, status=Status.COMPLETED, outcome=outcome)


def cancel(task: Task, *, now: datetime) -> Task:
    return _changed(task, now, status=Status.CANCELLED)


def escalate(task: Task, *, now: datetime) -> Task | None:
    """The task raised to urgent, once: None when it was escalated before or is closed
    (the work is done), so a replayed escalation changes nothing."""
    if task.escalated_at is not None or not task.is_active:
        return None
    return _changed(task, now, priority=Priority.URGENT, escalated_at=now)
