"""The no-show check's timer handler: `usecases.no_show.check_no_show` in the timer's
transaction, so the fired mark, the status, the event and the audit record commit
together or not at all."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_kit.db.timers import DueTimer, TimerHandler
from careloop_kit.service import Runtime
from careloop_scheduling.usecases.no_show import check_no_show


def no_show_handler(runtime: Runtime) -> TimerHandler:
    """Mark a still-booked appointment `noshow` when its check fires."""

    async def fire(session: AsyncSession, timer: DueTimer) -> None:
        payload: dict[str, Any] = timer.payload
        await check_no_show(
            runtime, session, org_id=payload["org_id"], appointment_id=payload["appointment_id"]
        )

    return fire
