"""The worklist: create a task by hand, read, list and count tasks, claim, assign,
comment, complete and cancel.

Every step that touches a task is audited in the request's transaction (the kit's
`RequestContext.audited` / `opened`): a task names its patient, and its comments may be
clinical. Authorization of the object happens here, after the door checked the
permission: another organization's task is a 404, a location outside the caller's scope
a 403 (tasks are staff work: a patient account holds no tasks permission at all).

A change is decided on the version the caller read and saved against it: of two
concurrent changes to one task exactly one wins, the other is a 409.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

from careloop_contracts.tasks import TaskAssigned, TaskCompleted
from careloop_kit.audit import AuditEntry
from careloop_kit.auth import visible_categories
from careloop_kit.auth.permissions import CLINICAL
from careloop_kit.context import RequestContext
from careloop_kit.problems import Forbidden
from careloop_kit.repository import new_id
from careloop_tasks.domain import task as lifecycle
from careloop_tasks.domain.task import Outcome, Priority, Status, Task, TaskClosed, queue_name
from careloop_tasks.domain.titles import UnsafeTitle, title_for
from careloop_tasks.store.repository import Repositories
from careloop_tasks.store.tasks import StaleTask, WorklistQuery
from careloop_tasks.usecases.common import (
    InvalidTask,
    TaskChanged,
    TaskNotActive,
    field_cipher,
    settings_of,
)
from careloop_tasks.usecases.events import event_fields, routing
from careloop_tasks.usecases.lifecycle import open_task

RESOURCE = "Task"
READ, UPDATE = "tasks:read", "tasks:update"

Context = RequestContext[Repositories]


@dataclass(frozen=True)
class Comment:
    id: str
    author_id: str
    at: datetime
    body: str | None
    """None when the caller may not see clinical content."""


@dataclass(frozen=True)
class TaskView:
    task: Task
    overdue: bool
    note: str | None
    comments: tuple[Comment, ...]
    withheld_clinical: bool


@dataclass(frozen=True)
class ManualTask:
    """What staff say when they put a task on a queue by hand."""

    location_id: str
    queue_role: str
    kind: str
    priority: Priority
    due_in: timedelta
    patient_id: str | None
    subject_kind: str | None
    subject_id: str | None
    note: str | None


def _missing(task_id: str) -> str:
    # Another tenant's task is indistinguishable from a missing one.
    return f"No task {task_id} in this organization."


def _sees_clinical(ctx: Context, permission: str) -> bool:
    return CLINICAL in visible_categories(ctx.principal, permission)


def _entry(action: str, resource_id: str | None = None) -> AuditEntry:
    return AuditEntry(
        action=action, resource_type=RESOURCE, phi_categories=[CLINICAL], resource_id=resource_id
    )


def _opened(ctx: Context, task_id: str, action: str) -> AbstractAsyncContextManager[Task]:
    """The caller's task inside one audited scope of `action`: 404 when it is not the
    organization's, its patient named in the trail, then the location check."""
    principal = ctx.principal

    def check(found: Task) -> object:
        return principal.can_access_location(found.location_id)

    return ctx.opened(
        _entry(action, task_id),
        ctx.repos.tasks.get(principal.org_id, task_id),
        missing=_missing(task_id),
        patient_of=lambda t: t.patient_id,
        check=check,
    )


async def _seal(
    ctx: Context, text: str, *, org_id: str, table: str, column: str, row_id: str
) -> bytes:
    return await field_cipher(ctx.runtime).seal_field(
        ctx.session, text, org_id=org_id, table=table, column=column, row_id=row_id
    )


async def _view(ctx: Context, found: Task, permission: str) -> TaskView:
    shown = _sees_clinical(ctx, permission)
    cipher = field_cipher(ctx.runtime)
    note = None
    comments = []
    blob = await ctx.repos.tasks.note_of(found.org_id, found.id)
    if shown and blob is not None:
        note = await cipher.open_field(
            ctx.session, blob, org_id=found.org_id, table="task", column="note", row_id=found.id
        )
    for stored in await ctx.repos.tasks.comments(found.org_id, found.id):
        body = (
            await cipher.open_field(
                ctx.session,
                stored.body_ct,
                org_id=found.org_id,
                table="task_comment",
                column="body",
                row_id=stored.id,
            )
            if shown
            else None
        )
        comments.append(Comment(stored.id, stored.author_id, stored.at, body))
    now = ctx.runtime.clock.now()
    return TaskView(found, found.overdue_at(now), note, tuple(comments), not shown)


async def create_task(ctx: Context, request: ManualTask) -> TaskView:
    """Put a task on a queue of a location in the caller's scope; its title comes from
    the kind's template, what staff write goes in the sealed note."""
    principal = ctx.principal
    entry = _entry("create")
    entry.patient_id = request.patient_id
    async with ctx.audited(entry):
        principal.can_access_location(request.location_id)
        try:
            title = title_for(request.kind, {})
        except UnsafeTitle as exc:
            raise InvalidTask(str(exc)) from exc
        now = ctx.runtime.clock.now()
        new = Task(
            id=new_id(),
            org_id=principal.org_id,
            location_id=request.location_id,
            queue=queue_name(request.queue_role, request.location_id),
            kind=request.kind,
            title=title,
            priority=request.priority,
            status=Status.OPEN,
            due_at=now + request.due_in,
            patient_id=request.patient_id,
            subject_kind=request.subject_kind,
            subject_id=request.subject_id,
            dedup_key=None,
            rule_id=None,
            assignee_id=None,
            outcome=None,
            escalated_at=None,
            version=1,
            created_at=now,
            updated_at=now,
        )
        entry.resource_id = new.id
        note_ct = None
        if request.note and request.note.strip():
            note_ct = await _seal(
                ctx,
                request.note.strip(),
                org_id=new.org_id,
                table="task",
                column="note",
                row_id=new.id,
            )
        stored = await open_task(ctx.runtime, ctx.session, new, note_ct=note_ct)
        assert stored is not None  # a task made by hand has no dedup key to clash on
        return await _view(ctx, stored, UPDATE)


async def read_task(ctx: Context, task_id: str) -> TaskView:
    """One task with its note and comments (withheld from who may not see clinical data)."""
    async with _opened(ctx, task_id, "read") as found:
        return await _view(ctx, found, READ)


def _check_version(current: Task, expected: int) -> None:
    if expected != current.version:
        raise TaskChanged(
            f"The task is at version {current.version} ({current.status}), not {expected}: "
            "read it again and decide on its current state.",
            current_version=current.version,
            current_status=current.status.value,
        )


async def _save(ctx: Context, changed: Task, current: Task) -> None:
    try:
        await ctx.repos.tasks.save(changed, previous_version=current.version)
    except StaleTask as exc:
        raise TaskChanged("Another change to this task was saved first: read it again.") from exc


def _apply(change: Callable[[], Task]) -> Task:
    try:
        return change()
    except TaskClosed as exc:
        raise TaskNotActive(str(exc), current_status=exc.status.value) from exc


async def _assign(
    ctx: Context, task_id: str, assignee_id: str, *, version: int, claim: bool
) -> TaskView:
    principal = ctx.principal
    async with _opened(ctx, task_id, "update") as current:
        _check_version(current, version)
        members = await ctx.repos.queues.members(current.org_id, current.queue)
        if assignee_id not in members:
            if claim:
                raise Forbidden(f"Only members of the queue {current.queue} claim its tasks.")
            raise InvalidTask(f"{assignee_id} is not a member of the queue {current.queue}.")
        now = ctx.runtime.clock.now()
        if claim:
            changed = _apply(lambda: lifecycle.claim(current, principal.actor_id, now=now))
        else:
            changed = _apply(lambda: lifecycle.assign(current, assignee_id, now=now))
        await _save(ctx, changed, current)
        await ctx.runtime.outbox.add(
            ctx.session,
            TaskAssigned(
                **event_fields(changed, now),
                assigned_by="claim" if claim else "assign",
                previous_assignee_id=current.assignee_id,
            ),
            **routing(changed),
        )
        return await _view(ctx, changed, UPDATE)


async def claim_task(ctx: Context, task_id: str, *, version: int) -> TaskView:
    """The caller, a member of the task's queue, takes the task up (in progress)."""
    return await _assign(ctx, task_id, ctx.principal.actor_id, version=version, claim=True)


async def assign_task(ctx: Context, task_id: str, assignee_id: str, *, version: int) -> TaskView:
    """Give the task to a member of its queue."""
    return await _assign(ctx, task_id, assignee_id, version=version, claim=False)


async def complete_task(ctx: Context, task_id: str, outcome: Outcome, *, version: int) -> TaskView:
    """Close the task with its outcome; `TaskCompleted`."""
    async with _opened(ctx, task_id, "update") as current:
        _check_version(current, version)
        now = ctx.runtime.clock.now()
        changed = _apply(lambda: lifecycle.complete(current, outcome, now=now))
        await _save(ctx, changed, current)
        await ctx.runtime.outbox.add(
            ctx.session,
            TaskCompleted(**event_fields(changed, now), outcome=outcome.value),
            **routing(changed),
        )
        return await _view(ctx, changed, UPDATE)


async def cancel_task(ctx: Context, task_id: str, *, version: int) -> TaskView:
    """Withdraw the task (no event: nothing was done, analytics counts completions)."""
    async with _opened(ctx, task_id, "update") as current:
        _check_version(current, version)
        changed = _apply(lambda: lifecycle.cancel(current, now=ctx.runtime.clock.now()))
        await _save(ctx, changed, current)
        return await _view(ctx, changed, UPDATE)


async def comment_on_task(ctx: Context, task_id: str, body: str) -> TaskView:
    """Add a comment (sealed: comments may hold PHI); comments do not change the task's
    version, so a comment never makes someone else's completion stale."""
    async with _opened(ctx, task_id, "update") as current:
        if not current.is_active:
            raise TaskNotActive(
                f"The task is {current.status.value}: it takes no more comments.",
                current_status=current.status.value,
            )
        comment_id = new_id()
        sealed = await _seal(
            ctx,
            body.strip(),
            org_id=current.org_id,
            table="task_comment",
            column="body",
            row_id=comment_id,
        )
        await ctx.repos.tasks.add_comment(
            current,
            comment_id=comment_id,
            author_id=ctx.principal.actor_id,
            at=ctx.runtime.clock.now(),
            body_ct=sealed,
        )
        return await _view(ctx, current, UPDATE)


@dataclass(frozen=True)
class TaskFilter:
    mine: bool = False
    assignee_id: str | None = None
    queue: str | None = None
    location_id: str | None = None
    statuses: tuple[Status, ...] = ()
    overdue: bool | None = None
    patient_id: str | None = None
    subject_kind: str | None = None
    subject_id: str | None = None


def _query(ctx: Context, wanted: TaskFilter) -> WorklistQuery:
    principal = ctx.principal
    if principal.is_patient:
        raise Forbidden("Tasks are staff work.")
    _, locations = principal.listing_scope(None)
    if wanted.location_id is not None:
        principal.can_access_location(wanted.location_id)
    return WorklistQuery(
        locations=locations,
        queue=wanted.queue,
        location_id=wanted.location_id,
        assignee_id=principal.actor_id if wanted.mine else wanted.assignee_id,
        statuses=wanted.statuses,
        overdue=wanted.overdue,
        patient_id=wanted.patient_id,
        subject_kind=wanted.subject_kind,
        subject_id=wanted.subject_id,
    )


async def list_tasks(
    ctx: Context, wanted: TaskFilter, *, after: str | None, limit: int
) -> tuple[list[tuple[Task, bool]], str | None]:
    """A page of tasks in the caller's scope, each with its overdue flag, in id order
    after `after`, and the `after` of the next page (None: last). Every patient listed
    is named in the audit trail."""
    size = min(limit, settings_of(ctx.runtime).max_page_size)
    entry = _entry("query")
    async with ctx.audited(entry):
        query = _query(ctx, wanted)
        now = ctx.runtime.clock.now()
        found = await ctx.repos.tasks.page(
            ctx.principal.org_id, query, now=now, after=after, limit=size
        )
        entry.disclose_patients(t.patient_id for t in found if t.patient_id)
    page = [(t, t.overdue_at(now)) for t in found]
    return page, found[-1].id if len(found) == size else None


async def count_tasks(ctx: Context, wanted: TaskFilter) -> tuple[dict[Status, int], int]:
    """How many tasks of the caller's scope are in each status, and how many overdue.
    Figures name no patient, but counts for one patient say there is work about them, so
    the query is audited like a listing (on that patient's trail when one is named)."""
    entry = _entry("query")
    entry.patient_id = wanted.patient_id
    async with ctx.audited(entry):
        query = _query(ctx, wanted)
        now = ctx.runtime.clock.now()
        return await ctx.repos.tasks.counts(ctx.principal.org_id, query, now=now)
