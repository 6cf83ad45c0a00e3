"""The waitlist consumer and its round timer: freed times (scheduling's own
cancellations and reschedules), patients' acceptances and offer rounds' expiries go to
`usecases.waitlist`, each in the transaction of the kit's inbox mark or of the timer."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import (
    AppointmentCancelled,
    AppointmentRescheduled,
    Envelope,
    Event,
    ReplyReceivedV2,
)
from careloop_contracts.messaging import TOPIC as MESSAGING_TOPIC
from careloop_contracts.scheduling import TOPIC as SCHEDULING_TOPIC
from careloop_kit.bus.consumer import Handler
from careloop_kit.db.timers import DueTimer, TimerHandler
from careloop_kit.service import ConsumerSpec, Runtime
from careloop_scheduling.usecases.waitlist import Waitlist, waitlist_work

log = logging.getLogger(__name__)


def waitlist_handlers(runtime: Runtime) -> Mapping[str, Handler]:
    """Handlers of the waitlist consumer: freed times (scheduling's own cancellations
    and reschedules) and acceptances. Other events on the two topics are skipped."""

    def work(session: AsyncSession, envelope: Envelope) -> Waitlist:
        return waitlist_work(runtime, session, envelope.correlation_id or envelope.id)

    async def on_cancelled(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        if not isinstance(event, AppointmentCancelled):
            raise TypeError(f"expected AppointmentCancelled, got {type(event).__name__}")
        await work(session, envelope).free_time_of(event.org_id, event.appointment_id)

    async def on_rescheduled(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        if not isinstance(event, AppointmentRescheduled):
            raise TypeError(f"expected AppointmentRescheduled, got {type(event).__name__}")
        await work(session, envelope).free_time_of(event.org_id, event.previous_appointment_id)

    async def on_reply(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        if not isinstance(event, ReplyReceivedV2):
            raise TypeError(f"expected ReplyReceivedV2, got {type(event).__name__}")
        if event.intent != "accept":
            return  # confirm, reschedule, choose and cancel: the replies consumer's
        if event.offer_id is None:
            log.warning("accept %s ignored: no offer id", event.reply_id)
            return
        await work(session, envelope).accept(event, event.offer_id)

    return {
        AppointmentCancelled.event_type: on_cancelled,
        AppointmentRescheduled.event_type: on_rescheduled,
        ReplyReceivedV2.event_type: on_reply,
    }


def waitlist_round_handler(runtime: Runtime) -> TimerHandler:
    """End an offer round when its timer fires, in the timer's transaction."""

    async def fire(session: AsyncSession, timer: DueTimer) -> None:
        payload: dict[str, Any] = timer.payload
        await waitlist_work(runtime, session).round_due(
            payload["org_id"], payload["slot_id"], int(payload["round"])
        )

    return fire


WAITLIST_CONSUMER = ConsumerSpec(
    name="waitlist",
    topics=(SCHEDULING_TOPIC, MESSAGING_TOPIC),
    handlers=waitlist_handlers,
)
