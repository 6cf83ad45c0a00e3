"""Request and response bodies of the tasks API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from careloop_tasks.domain.task import Outcome, Priority, Status

IdStr = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")]
RoleStr = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4000)]
Version = Annotated[
    int,
    Field(
        ge=1,
        description=(
            "The version the change was decided on; a task changed since is refused with "
            "409 instead of changed twice."
        ),
    ),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskCreate(_In):
    location_id: IdStr = Field(description="Location whose queue gets the task.")
    queue_role: RoleStr = Field(description="Role of the queue (`referral-coordinator`).")
    kind: str = Field(description="The task's kind: its title comes from the kind's template.")
    priority: Priority = Priority.NORMAL
    due_in_hours: float = Field(24, gt=0, le=24 * 365, description="Time to do it (its SLA).")
    patient_id: IdStr | None = Field(None, description="The patient the task is about.")
    subject_kind: RoleStr | None = Field(None, description="Kind of the linked record.")
    subject_id: IdStr | None = Field(None, description="Id of the linked record.")
    note: Text | None = Field(None, description="What to do (stored encrypted; may hold PHI).")


class VersionedChange(_In):
    version: Version


class AssignmentCreate(VersionedChange):
    assignee_id: IdStr = Field(description="A member of the task's queue.")


class CompletionCreate(VersionedChange):
    outcome: Outcome = Field(description="How the work ended.")


class CommentCreate(_In):
    body: Text = Field(description="The comment (stored encrypted; may hold PHI).")


class CommentRead(BaseModel):
    id: str
    author_id: str
    at: datetime
    body: str | None = Field(description="Null when withheld.")


class TaskSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
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
    assignee_id: str | None
    outcome: Outcome | None
    escalated_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime
    overdue: bool = Field(False, description="Still to do and past its due time.")


class TaskRead(TaskSummary):
    org_id: str
    rule_id: str | None
    note: str | None = Field(description="Null when withheld or none was written.")
    comments: list[CommentRead]
    withheld_categories: list[str]


class TaskPage(BaseModel):
    items: list[TaskSummary]
    next_after: str | None


class TaskCounts(BaseModel):
    by_status: dict[Status, int]
    overdue: int


class QueueMembers(BaseModel):
    queue: str
    members: list[str]


class RuleSetRead(BaseModel):
    rules: list[dict[str, Any]]
    version: int = Field(description="0: the shipped defaults (no rules of your own saved).")
    updated_by: str | None
    updated_at: datetime | None


class RuleSetWrite(BaseModel):
    rules: list[dict[str, Any]] = Field(
        description=(
            "The rules, in order: `{id, on, action: create|escalate, kind, queue_role, "
            "priority, due_in_hours, subject: {kind, field}, dedup_on, match}` or "
            "`{id, on, action: escalate, target}`."
        )
    )
