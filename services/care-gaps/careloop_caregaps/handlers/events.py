"""The consumers: patients' events (`careloop.caregaps.facts`), scheduling's appointment
events (`careloop.caregaps.appointments`) and identity's location events
(`careloop.caregaps.locations`), each to its step in `usecases.from_events`, in the
transaction of the kit's inbox mark; the topics' other events are skipped. A step that
raises (patients unreachable for a demographics read) takes the kit's retry and
dead-letter path."""

from __future__ import annotations

from careloop_caregaps.usecases.from_events import (
    APPOINTMENT_EVENTS,
    PATIENT_EVENTS,
    apply_location,
    on_appointment_event,
    on_patient_event,
)
from careloop_kit.consumers import step_consumer
from careloop_kit.locations import location_consumer

FACTS_CONSUMER = step_consumer(
    "facts", PATIENT_EVENTS, on_patient_event, described_as="a patient or clinical fact event"
)
APPOINTMENTS_CONSUMER = step_consumer(
    "appointments", APPOINTMENT_EVENTS, on_appointment_event, described_as="an appointment event"
)
LOCATIONS_CONSUMER = location_consumer(apply_location)
