"""The care-relationships consumer: scheduling's appointment events (on
`careloop.scheduling`) go to `usecases.care_relationships.apply_appointment`, in the
transaction of the kit's inbox mark, so a redelivered event is a no-op. The other
scheduling events on the topic (reminders, offers, access records) are skipped."""

from __future__ import annotations

from careloop_contracts.scheduling import APPOINTMENT_EVENTS
from careloop_kit.consumers import step_consumer
from careloop_patients.usecases.care_relationships import apply_appointment

# The status after the change alone decides, so an event arriving out of order cannot
# reopen a cancelled appointment's relationship (a source opens one relationship once).
CARE_RELATIONSHIPS_CONSUMER = step_consumer(
    "care-relationships",
    APPOINTMENT_EVENTS,
    apply_appointment,
    described_as="an appointment event",
)
