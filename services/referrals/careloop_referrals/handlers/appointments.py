"""The appointments consumer: scheduling's appointment events (on `careloop.scheduling`)
go to `usecases.appointments.apply_appointment`, in the transaction of the kit's inbox
mark. The other scheduling events on the topic (reminders, offers, access records) are
skipped."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import Envelope, Event
from careloop_contracts.scheduling import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentEvent,
    AppointmentNoShow,
)
from careloop_kit.bus.consumer import Handler
from careloop_kit.service import ConsumerSpec, Runtime
from careloop_referrals.usecases.appointments import apply_appointment

APPOINTMENT_EVENTS: tuple[type[AppointmentEvent], ...] = (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentNoShow,
)


def appointment_handlers(runtime: Runtime) -> Mapping[str, Handler]:
    async def on_appointment(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        if not isinstance(event, AppointmentEvent):
            raise TypeError(f"expected an appointment event, got {type(event).__name__}")
        await apply_appointment(runtime, session, event)

    return {kind.event_type: on_appointment for kind in APPOINTMENT_EVENTS}


APPOINTMENTS_CONSUMER = ConsumerSpec(
    name="appointments", topics=(AppointmentBooked.topic,), handlers=appointment_handlers
)
