"""The care-relationships consumer: scheduling's appointment events (on
`careloop.scheduling`) go to `usecases.care_relationships.apply_appointment`, in the
transaction of the kit's inbox mark, so a redelivered event is a no-op. The other
scheduling events on the topic (reminders, offers, access records) are skipped."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import Envelope, Event
from careloop_contracts.scheduling import APPOINTMENT_EVENTS, AppointmentBooked, AppointmentEvent
from careloop_kit.bus.consumer import Handler
from careloop_kit.service import ConsumerSpec, Runtime
from careloop_patients.usecases.care_relationships import apply_appointment


def appointment_handlers(runtime: Runtime) -> Mapping[str, Handler]:
    """Handlers of the care-relationships consumer: every appointment event, alike."""

    async def on_appointment(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        if not isinstance(event, AppointmentEvent):
            raise TypeError(f"expected an appointment event, got {type(event).__name__}")
        await apply_appointment(runtime, session, event)

    # The status after the change alone decides, so an event arriving out of order
    # cannot reopen a cancelled appointment's relationship (a source opens one
    # relationship once).
    return {kind.event_type: on_appointment for kind in APPOINTMENT_EVENTS}


CARE_RELATIONSHIPS_CONSUMER = ConsumerSpec(
    name="care-relationships", topics=(AppointmentBooked.topic,), handlers=appointment_handlers
)
