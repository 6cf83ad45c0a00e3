"""The replica's timer worker: it fires campaign steps' answer times, each through
`usecases.campaigns.fire_step` in the timer's transaction. Every replica runs one; they
share the due timers (`FOR UPDATE SKIP LOCKED`)."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_caregaps.settings import CaregapsSettings
from careloop_caregaps.store.tables import platform
from careloop_caregaps.usecases.answers import STEP_TIMER
from careloop_caregaps.usecases.campaigns import fire_step
from careloop_kit.db.timers import DueTimer, TimerWorker
from careloop_kit.service import Runtime

WORKER_KEY = "caregaps_step_worker"


def step_worker(runtime: Runtime) -> TimerWorker:
    """The replica's timer worker (tests call its `fire_due()` after moving the clock)."""
    worker: TimerWorker = runtime.state[WORKER_KEY]
    return worker


def build_step_worker(runtime: Runtime, settings: CaregapsSettings) -> TimerWorker:
    async def fire(session: AsyncSession, timer: DueTimer) -> None:
        await fire_step(runtime, session, timer)

    return TimerWorker(
        runtime.sessionmaker,
        platform,
        {STEP_TIMER: fire},
        clock=runtime.clock,
        poll_interval_s=settings.campaign_poll_interval_s,
    )


async def campaign_steps(runtime: Runtime, stop: asyncio.Event) -> None:
    """Background job: fire campaign steps' answer times until shutdown."""
    await step_worker(runtime).run(stop)
