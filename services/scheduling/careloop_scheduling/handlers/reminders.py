"""The replica's timer worker: it fires every scheduling timer (reminder touches,
no-show checks, and whatever `extra` adds), each through its use case in the timer's
transaction (`usecases.reminders`, `usecases.no_show`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.db.timers import DueTimer, TimerHandler, TimerWorker
from careloop_kit.service import Runtime
from careloop_scheduling.domain.attendance import NO_SHOW_TIMER_KIND
from careloop_scheduling.domain.reminder_settings import TIMER_KIND
from careloop_scheduling.handlers.no_show import no_show_handler
from careloop_scheduling.settings import SchedulingSettings
from careloop_scheduling.store.tables import platform
from careloop_scheduling.usecases.reminders import send_reminder

WORKER_KEY = "scheduling_reminder_worker"


def reminder_worker(runtime: Runtime) -> TimerWorker:
    """The replica's timer worker, reminders and no-show checks (tests call its
    `fire_due()` after moving the clock)."""
    worker: TimerWorker = runtime.state[WORKER_KEY]
    return worker


def reminder_handler(runtime: Runtime, settings: SchedulingSettings) -> TimerHandler:
    """Publish `ReminderDue` for a fired reminder timer, in the timer's transaction."""

    async def fire(session: AsyncSession, timer: DueTimer) -> None:
        payload: dict[str, Any] = timer.payload
        await send_reminder(
            runtime,
            settings,
            session,
            org_id=payload["org_id"],
            appointment_id=payload["appointment_id"],
            touch=payload["touch"],
            touch_key=payload["touch_key"],
            due_at=timer.due_at,
        )

    return fire


def build_reminder_worker(
    runtime: Runtime,
    settings: SchedulingSettings,
    *,
    extra: Mapping[str, TimerHandler] | None = None,
) -> TimerWorker:
    """One worker fires every appointment timer, dispatching by kind: a second worker
    would only add a second polling loop over the same table. `extra` adds handlers of
    other kinds (the waitlist's offer rounds)."""
    return TimerWorker(
        runtime.sessionmaker,
        platform,
        {
            TIMER_KIND: reminder_handler(runtime, settings),
            NO_SHOW_TIMER_KIND: no_show_handler(runtime),
            **(extra or {}),
        },
        clock=runtime.clock,
        poll_interval_s=settings.reminder_poll_interval_s,
    )


async def reminder_timers(runtime: Runtime, stop: asyncio.Event) -> None:
    """Background job: fire due reminder and no-show timers until shutdown."""
    await reminder_worker(runtime).run(stop)
