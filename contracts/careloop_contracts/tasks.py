"""Events of the tasks service (topic ``careloop.tasks``, keyed by patient id, or by task
id for a task that names no patient).

A task's events carry ids, codes and the worklist's state, never a comment, a note or
any free text: a task's title comes from its kind's template, and analytics reads the
rest from the tasks API, which audits the access.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from careloop_contracts.base import Event, Id, UtcDatetime

TOPIC = "careloop.tasks"

TaskStatusName = Literal["open", "in-progress", "completed", "cancelled"]
TaskPriorityName = Literal["low", "normal", "high", "urgent"]
TaskOutcomeName = Literal["resolved", "no-action-needed", "unreachable", "handed-off"]
AssignedByName = Literal["round-robin", "claim", "assign"]


class TaskEvent(Event):
    """The task snapshot every task event carries (abstract)."""

    key_fields: ClassVar[tuple[str, ...]] = ("patient_id", "task_id")

    task_id: Id = Field(description="Id of the task.")
    org_id: Id = Field(description="Organization (tenant) that owns the task.")
    location_id: Id = Field(description="Location whose queue holds the task.")
    queue: str = Field(description="The queue: `<role>@<location id>`.")
    kind: str = Field(description="The task's kind (its title comes from the kind's template).")
    priority: TaskPriorityName = Field(description="Priority after the change.")
    status: TaskStatusName = Field(description="Status after the change.")
    patient_id: Id | None = Field(None, description="The patient the task is about, if any.")
    subject_kind: str | None = Field(None, description="Kind of the linked record (`referral`).")
    subject_id: Id | None = Field(None, description="Id of the linked record.")
    assignee_id: Id | None = Field(None, description="The staff user the task is assigned to.")
    due_at: UtcDatetime = Field(description="When the task is due (its SLA).")
    version: int = Field(ge=1, description="Task version after the change.")
    occurred_at: UtcDatetime = Field(description="When the change was committed (UTC).")


class TaskCreated(TaskEvent):
    """Emitted when a task is created: by a rule from another service's event, or by
    hand by staff."""

    event_type = "careloop.tasks.task.created.v1"
    topic = TOPIC

    rule_id: str | None = Field(None, description="The rule that created it (None: by hand).")


class TaskAssigned(TaskEvent):
    """Emitted when a task gets an assignee: round-robin among the queue's members at
    creation, a member's claim, or an assignment by staff."""

    event_type = "careloop.tasks.task.assigned.v1"
    topic = TOPIC

    assigned_by: AssignedByName = Field(description="How the assignee was chosen.")
    previous_assignee_id: Id | None = Field(None, description="The assignee before, if any.")


class TaskCompleted(TaskEvent):
    """Emitted when a task is completed with its outcome code."""

    event_type = "careloop.tasks.task.completed.v1"
    topic = TOPIC

    outcome: TaskOutcomeName = Field(description="How the work ended.")


class TaskOverdue(TaskEvent):
    """Emitted once per task still open or in progress at its due time."""

    event_type = "careloop.tasks.task.overdue.v1"
    topic = TOPIC


class TaskEscalated(TaskEvent):
    """Emitted when a rule escalates an existing task (a stalled referral still stalled
    at its escalation time): the priority is raised to urgent."""

    event_type = "careloop.tasks.task.escalated.v1"
    topic = TOPIC

    previous_priority: TaskPriorityName = Field(description="Priority before the escalation.")
    rule_id: str = Field(description="The rule that escalated it.")


TASK_EVENTS: tuple[type[TaskEvent], ...] = (
    TaskCreated,
    TaskAssigned,
    TaskCompleted,
    TaskOverdue,
    TaskEscalated,
)
"""Every event the tasks service publishes about a task."""
