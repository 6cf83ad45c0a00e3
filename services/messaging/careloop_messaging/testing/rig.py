"""Test helpers shared by messaging's service tests and the end-to-end tests: publish
`ReminderDue` and `RescheduleOffered` events as scheduling would. Email is collected by
the kit's SMTP server (`careloop_kit.testing.smtp`), offered here under the names these
tests have always imported."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from careloop_contracts import Envelope as EventEnvelope
from careloop_contracts import Event, ReminderDue, RescheduleOffered, to_headers
from careloop_kit.bus.kafka import make_producer
from careloop_kit.settings import KitSettings
from careloop_kit.testing.smtp import SmtpCollector, email_texts, smtp_server

__all__ = [
    "SmtpCollector",
    "email_texts",
    "publish",
    "reminder_due",
    "reschedule_offered",
    "smtp_server",
]


def reminder_due(
    *,
    org_id: str,
    patient_id: str,
    appointment_id: str,
    touch: str = "1_day_before",
    practice_name: str = "Bayview Family Practice",
    start_at: datetime | None = None,
    time_zone: str = "America/New_York",
    sensitive_location: bool = False,
) -> ReminderDue:
    """A `ReminderDue` for one touch of one appointment."""
    start = start_at or datetime(2031, 3, 4, 14, 30, tzinfo=UTC)
    return ReminderDue(
        touch_key=f"{appointment_id}:{touch}",
        touch=touch,
        appointment_id=appointment_id,
        patient_id=patient_id,
        org_id=org_id,
        location_id="loc-north",
        start_at=start,
        location_time_zone=time_zone,
        practice_name=practice_name,
        sensitive_location=sensitive_location,
        due_at=start - timedelta(days=1),
    )


def reschedule_offered(
    *,
    org_id: str,
    patient_id: str,
    appointment_id: str,
    offer_id: str,
    options: list[datetime] | None = None,
    practice_name: str = "Bayview Family Practice",
    time_zone: str = "America/New_York",
    expires_at: datetime | None = None,
) -> RescheduleOffered:
    """A `RescheduleOffered` with three open slots (by default 5-7 March 2031, UTC)."""
    slots = options or [
        datetime(2031, 3, 5, 14, 0, tzinfo=UTC),
        datetime(2031, 3, 6, 19, 30, tzinfo=UTC),
        datetime(2031, 3, 7, 13, 15, tzinfo=UTC),
    ]
    return RescheduleOffered(
        offer_id=offer_id,
        appointment_id=appointment_id,
        patient_id=patient_id,
        org_id=org_id,
        location_id="loc-north",
        options=slots,
        location_time_zone=time_zone,
        practice_name=practice_name,
        sensitive_location=False,
        # Far ahead by default: the delivery worker refuses to send a lapsed offer.
        expires_at=expires_at or datetime.now(UTC) + timedelta(days=1),
    )


async def publish(settings: KitSettings, *events: Event, event_id: str | None = None) -> list[str]:
    """Publish events on their (prefixed) topic as the owning service's relay would;
    returns their event ids. `event_id` forces the id (a redelivery)."""
    producer = make_producer(settings, client_id="test-publisher")
    await producer.start()
    ids = []
    try:
        for event in events:
            envelope = EventEnvelope(
                type=event.event_type,
                source=f"/careloop/{event.service}",
                time=datetime.now(UTC),
                subject=event.partition_key(),
                org_id=str(getattr(event, "org_id", "")),
                **({"id": event_id} if event_id else {}),
            )
            await producer.send_and_wait(
                f"{settings.topic_prefix}{event.topic}",
                value=event.to_json(),
                key=event.partition_key().encode(),
                headers=to_headers(envelope),
            )
            ids.append(envelope.id)
    finally:
        await producer.stop()
    return ids
