"""The replica's timer worker: it fires the stage clocks of referrals
(`usecases.clocks.fire_clock`), the expiry reminders of their authorizations
(`usecases.authorizations.fire_reminder`) and the delivery attempts of outcome reports
(`usecases.outcomes.fire_report`) and the leakage watches of outbound referrals
(`usecases.leakage.fire_leakage`), each in the timer's transaction. Every
replica runs one; they share the due timers (`FOR UPDATE SKIP LOCKED`)."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.db.timers import DueTimer, TimerWorker
from careloop_kit.service import Runtime
from careloop_referrals.settings import ReferralsSettings
from careloop_referrals.store.tables import platform
from careloop_referrals.usecases.authorizations import REMINDER_TIMER, fire_reminder
from careloop_referrals.usecases.clocks import CLOCK_TIMER, fire_clock
from careloop_referrals.usecases.leakage import LEAKAGE_TIMER, fire_leakage
from careloop_referrals.usecases.outcomes import REPORT_TIMER, fire_report

WORKER_KEY = "referral_clock_worker"


def clock_worker(runtime: Runtime) -> TimerWorker:
    """The replica's timer worker (tests call its `fire_due()` after moving the clock)."""
    worker: TimerWorker = runtime.state[WORKER_KEY]
    return worker


def build_clock_worker(runtime: Runtime, settings: ReferralsSettings) -> TimerWorker:
    async def clock(session: AsyncSession, timer: DueTimer) -> None:
        await fire_clock(runtime, session, timer)

    async def reminder(session: AsyncSession, timer: DueTimer) -> None:
        await fire_reminder(runtime, session, timer)

    async def report(session: AsyncSession, timer: DueTimer) -> None:
        await fire_report(runtime, session, timer)

    async def leakage(session: AsyncSession, timer: DueTimer) -> None:
        await fire_leakage(runtime, session, timer)

    return TimerWorker(
        runtime.sessionmaker,
        platform,
        {
            CLOCK_TIMER: clock,
            REMINDER_TIMER: reminder,
            REPORT_TIMER: report,
            LEAKAGE_TIMER: leakage,
        },
        clock=runtime.clock,
        poll_interval_s=settings.clock_poll_interval_s,
    )


async def stage_clocks(runtime: Runtime, stop: asyncio.Event) -> None:
    """Background job: fire due clocks, reminders and report deliveries until shutdown."""
    await clock_worker(runtime).run(stop)
