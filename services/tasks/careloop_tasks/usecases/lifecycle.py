"""How a task starts and runs out, whichever door made it: inserted once per dedup key,
given to the queue member whose turn it is, announced, and its due time on a durable
timer that reports it overdue once if it is still to do then."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts.tasks import TaskAssigned, TaskCreated, TaskOverdue
from careloop_kit.db.timers import DueTimer, Timers
from careloop_kit.service import Runtime
from careloop_tasks.domain.assignment import next_in_turn
from careloop_tasks.domain.task import Task
from careloop_tasks.store.queues import QueueRepository
from careloop_tasks.store.tasks import TaskRepository
from careloop_tasks.usecases.events import event_fields, routing

log = logging.getLogger(__name__)

OVERDUE_TIMER = "task-overdue"
TIMERS_KEY = "task_timers"


def timers_of(runtime: Runtime) -> Timers:
    timers: Timers = runtime.state[TIMERS_KEY]
    return timers


async def open_task(
    runtime: Runtime, session: AsyncSession, new: Task, *, note_ct: bytes | None = None
) -> Task | None:
    """Store `new` (round-robin assigned when its queue has members), publish
    `TaskCreated` (and `TaskAssigned`) and start its overdue clock, all in the caller's
    transaction; None when a task with its dedup key exists already."""
    queues = QueueRepository(session)
    members = await queues.members(new.org_id, new.queue)
    assignee = None
    if members and new.assignee_id is None:
        # Locks the queue's place before the insert, so concurrent tasks take turns.
        assignee = next_in_turn(members, await queues.last_assigned(new.org_id, new.queue))
    stored = replace(new, assignee_id=assignee) if assignee else new
    if not await TaskRepository(session).add(stored, note_ct=note_ct):
        return None
    if assignee is not None:
        await queues.set_last_assigned(new.org_id, new.queue, assignee)
    await runtime.outbox.add(
        session,
        TaskCreated(**event_fields(stored, stored.created_at), rule_id=stored.rule_id),
        **routing(stored),
    )
    if assignee is not None:
        await runtime.outbox.add(
            session,
            TaskAssigned(**event_fields(stored, stored.created_at), assigned_by="round-robin"),
            **routing(stored),
        )
    await timers_of(runtime).schedule(
        session,
        OVERDUE_TIMER,
        stored.due_at,
        {"org_id": stored.org_id, "task_id": stored.id},
        dedup_key=f"task:{stored.id}:overdue",
    )
    return stored


async def fire_overdue(runtime: Runtime, session: AsyncSession, timer: DueTimer) -> None:
    """A task's due time came: `TaskOverdue`, once, if the task is still to do."""
    payload: dict[str, Any] = timer.payload
    tasks = TaskRepository(session)
    found = await tasks.get(payload["org_id"], payload["task_id"], for_update=True)
    now = runtime.clock.now()
    if found is None or not found.overdue_at(now):
        return
    await tasks.mark_overdue_notified(found, now)
    await runtime.outbox.add(session, TaskOverdue(**event_fields(found, now)), **routing(found))
    log.info("task %s overdue in %s", found.id, found.queue)
