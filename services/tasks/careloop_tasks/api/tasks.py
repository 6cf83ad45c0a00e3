"""Tasks: the worklist, its counts, one task, and the steps of working it.

Each route requires its permission from the permission table first (`require`, MFA
included); the use case (`usecases/tasks.py`) authorizes the object and audits the call;
the response leaves out notes and comments for callers who may not see clinical data.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, status

from careloop_kit.api_types import PageLimit
from careloop_kit.auth.permissions import CLINICAL
from careloop_tasks.api.common import ReadContext, UpdateContext
from careloop_tasks.api.schemas import (
    AssignmentCreate,
    CommentCreate,
    CommentRead,
    CompletionCreate,
    IdStr,
    TaskCounts,
    TaskCreate,
    TaskPage,
    TaskRead,
    TaskSummary,
    VersionedChange,
)
from careloop_tasks.domain.task import Status, Task
from careloop_tasks.usecases import tasks as steps
from careloop_tasks.usecases.tasks import ManualTask, TaskFilter, TaskView

router = APIRouter(prefix="/tasks", tags=["tasks"])


def _summary(task: Task, overdue: bool) -> TaskSummary:
    return TaskSummary.model_validate(task).model_copy(update={"overdue": overdue})


def _read(view: TaskView) -> TaskRead:
    t = view.task
    return TaskRead(
        **_summary(t, view.overdue).model_dump(),
        org_id=t.org_id,
        rule_id=t.rule_id,
        note=view.note,
        comments=[
            CommentRead(id=c.id, author_id=c.author_id, at=c.at, body=c.body) for c in view.comments
        ],
        withheld_categories=[CLINICAL] if view.withheld_clinical else [],
    )


def _filter(
    assignee: str | None,
    queue: str | None,
    location_id: str | None,
    task_status: list[Status] | None,
    overdue: bool | None,
    patient_id: str | None,
    subject_kind: str | None,
    subject_id: str | None,
) -> TaskFilter:
    return TaskFilter(
        mine=assignee == "me",
        assignee_id=None if assignee == "me" else assignee,
        queue=queue,
        location_id=location_id,
        statuses=tuple(task_status or ()),
        overdue=overdue,
        patient_id=patient_id,
        subject_kind=subject_kind,
        subject_id=subject_id,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TaskRead)
async def create_task(body: TaskCreate, ctx: UpdateContext) -> TaskRead:
    """Put a task on a queue by hand (its title comes from its kind)."""
    request = ManualTask(
        **body.model_dump(exclude={"due_in_hours"}), due_in=timedelta(hours=body.due_in_hours)
    )
    return _read(await steps.create_task(ctx, request))


@router.get("", response_model=TaskPage)
async def list_tasks(
    ctx: ReadContext,
    assignee: Annotated[IdStr | None, Query(description="`me`, or a staff user's id.")] = None,
    queue: str | None = None,
    location_id: IdStr | None = None,
    task_status: Annotated[list[Status] | None, Query(alias="status")] = None,
    overdue: bool | None = None,
    patient_id: IdStr | None = None,
    subject_kind: str | None = None,
    subject_id: IdStr | None = None,
    after: IdStr | None = None,
    limit: PageLimit = 50,
) -> TaskPage:
    """The worklist of your locations, in id order (repeat `status` to ask for several)."""
    wanted = _filter(
        assignee, queue, location_id, task_status, overdue, patient_id, subject_kind, subject_id
    )
    page, next_after = await steps.list_tasks(ctx, wanted, after=after, limit=limit)
    return TaskPage(items=[_summary(t, late) for t, late in page], next_after=next_after)


@router.get("/counts", response_model=TaskCounts)
async def count_tasks(
    ctx: ReadContext,
    assignee: Annotated[IdStr | None, Query(description="`me`, or a staff user's id.")] = None,
    queue: str | None = None,
    location_id: IdStr | None = None,
    patient_id: IdStr | None = None,
    subject_kind: str | None = None,
    subject_id: IdStr | None = None,
) -> TaskCounts:
    """How many tasks of your locations are in each status, and how many are overdue."""
    wanted = _filter(assignee, queue, location_id, None, None, patient_id, subject_kind, subject_id)
    per_status, overdue = await steps.count_tasks(ctx, wanted)
    return TaskCounts(by_status=per_status, overdue=overdue)


@router.get("/{task_id}", response_model=TaskRead)
async def read_task(task_id: IdStr, ctx: ReadContext) -> TaskRead:
    """Read one task with its note and comments."""
    return _read(await steps.read_task(ctx, task_id))


@router.post("/{task_id}/claim", response_model=TaskRead)
async def claim_task(task_id: IdStr, body: VersionedChange, ctx: UpdateContext) -> TaskRead:
    """Take a task of one of your queues (it is yours, in progress)."""
    return _read(await steps.claim_task(ctx, task_id, version=body.version))


@router.post("/{task_id}/assign", response_model=TaskRead)
async def assign_task(task_id: IdStr, body: AssignmentCreate, ctx: UpdateContext) -> TaskRead:
    """Give a task to a member of its queue."""
    view = await steps.assign_task(ctx, task_id, body.assignee_id, version=body.version)
    return _read(view)


@router.post("/{task_id}/comments", status_code=status.HTTP_201_CREATED, response_model=TaskRead)
async def comment_on_task(task_id: IdStr, body: CommentCreate, ctx: UpdateContext) -> TaskRead:
    """Add a comment to a task."""
    return _read(await steps.comment_on_task(ctx, task_id, body.body))


@router.post("/{task_id}/complete", response_model=TaskRead)
async def complete_task(task_id: IdStr, body: CompletionCreate, ctx: UpdateContext) -> TaskRead:
    """Complete a task with its outcome."""
    return _read(await steps.complete_task(ctx, task_id, body.outcome, version=body.version))


@router.post("/{task_id}/cancel", response_model=TaskRead)
async def cancel_task(task_id: IdStr, body: VersionedChange, ctx: UpdateContext) -> TaskRead:
    """Cancel a task that is no longer needed."""
    return _read(await steps.cancel_task(ctx, task_id, version=body.version))
