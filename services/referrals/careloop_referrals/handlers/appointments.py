"""The appointments consumer: scheduling's appointment events (on `careloop.scheduling`)
go to `usecases.appointments.apply_appointment`, in the transaction of the kit's inbox
mark; it acts only on the appointments a referral is linked to. The other scheduling
events on the topic (reminders, offers, access records) are skipped."""

from __future__ import annotations

from careloop_contracts.scheduling import APPOINTMENT_EVENTS
from careloop_kit.consumers import step_consumer
from careloop_referrals.usecases.appointments import apply_appointment

APPOINTMENTS_CONSUMER = step_consumer(
    "appointments", APPOINTMENT_EVENTS, apply_appointment, described_as="an appointment event"
)
