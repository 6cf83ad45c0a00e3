"""The `trail` consumer: every access record published on any event topic joins the log."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_audit.usecases.trail import record_access
from careloop_contracts import TOPICS, AccessRecorded, Envelope, Event
from careloop_kit.bus.consumer import Handler
from careloop_kit.service import ConsumerSpec, Runtime

EVENT_TOPICS = tuple(sorted(name for name, spec in TOPICS.items() if spec.kind == "events"))
"""Every service stream: any service may publish access records on its own topic."""


def trail_handlers(runtime: Runtime) -> Mapping[str, Handler]:
    """Handlers of the trail consumer, by event type."""

    async def on_access_recorded(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        if not isinstance(event, AccessRecorded):  # the kit routes by type; be explicit
            raise TypeError(f"expected AccessRecorded, got {type(event).__name__}")
        await record_access(session, event, event_id=envelope.id, recorded_at=runtime.clock.now())

    return {AccessRecorded.event_type: on_access_recorded}


TRAIL_CONSUMER = ConsumerSpec(name="trail", topics=EVENT_TOPICS, handlers=trail_handlers)
