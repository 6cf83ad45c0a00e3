"""The replica's timer worker: it fires tasks' due times, each through
`usecases.lifecycle.fire_overdue` in the timer's transaction. Every replica runs one;
they share the due timers (`FOR UPDATE SKIP LOCKED`)."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.db.timers import DueTimer, TimerWorker
from careloop_kit.service import Runtime
from careloop_tasks.settings import TasksSettings
from careloop_tasks.store.tables import platform
from careloop_tasks.usecases.lifecycle import OVERDUE_TIMER, fire_overdue

WORKER_KEY = "task_overdue_worker"


def overdue_worker(runtime: Runtime) -> TimerWorker:
    """The replica's timer worker (tests call its `fire_due()` after moving the clock)."""
    worker: TimerWorker = runtime.state[WORKER_KEY]
    return worker


def build_overdue_worker(runtime: Runtime, settings: TasksSettings) -> TimerWorker:
    async def fire(session: AsyncSession, timer: DueTimer) -> None:
        await fire_overdue(runtime, session, timer)

    return TimerWorker(
        runtime.sessionmaker,
        platform,
        {OVERDUE_TIMER: fire},
        clock=runtime.clock,
        poll_interval_s=settings.overdue_poll_interval_s,
    )


async def due_times(runtime: Runtime, stop: asyncio.Event) -> None:
    """Background job: fire tasks' due times until shutdown."""
    await overdue_worker(runtime).run(stop)
