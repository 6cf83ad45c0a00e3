"""The reminder pipeline of messaging against real PostgreSQL, Kafka and OpenBao.

Scheduling's `ReminderDue` events are published on the topic; the contact data comes
from a fake of the patients port (the real patients service is in the e2e test); SMS go
to the Twilio double over HTTP, email to a local SMTP server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import hvac
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

import careloop_messaging
from careloop_contracts import AppointmentBooked
from careloop_kit.db.migrate import alembic_config, upgrade_async
from careloop_kit.infra.ports import free_port
from careloop_kit.service import Runtime
from careloop_kit.testing.apps import serve_in_task
from careloop_kit.testing.kafka import read_topic
from careloop_messaging.app import create_app
from careloop_messaging.channels.sms import SIGNATURE_HEADER, compute_signature
from careloop_messaging.domain.outreach import ContactData, Recipient
from careloop_messaging.domain.templates import Channel
from careloop_messaging.settings import MessagingSettings
from careloop_messaging.store.repository import OptOuts, RecipientCipher
from careloop_messaging.store.tables import inbox_item, message, metadata
from careloop_messaging.testing.rig import (
    SmtpCollector,
    publish,
    reminder_due,
    reschedule_offered,
    smtp_server,
)
from careloop_messaging.testing.twilio_double import TwilioDouble

pytestmark = pytest.mark.service

MIGRATIONS = Path(careloop_messaging.__file__).parent / "migrations"
PHONE = "(555) 201-3344"
E164 = "+15552013344"


@dataclass
class FakeContacts:
    """The patients port, in memory: patient id -> contact data."""

    patients: dict[str, ContactData] = field(default_factory=dict)
    calls: int = 0

    async def contact(self, org_id: str, patient_id: str) -> ContactData | None:
        self.calls += 1
        return self.patients.get(patient_id)


def sms_patient(**changes: Any) -> ContactData:
    values: dict[str, Any] = {
        "phones": [PHONE],
        "emails": ["pat@example.org"],
        "allowed_channels": [Channel.SMS, Channel.EMAIL],
        "preferred_channel": Channel.SMS,
        "allow_automated_messages": True,
        "language": "en",
    }
    values.update(changes)
    return ContactData(**values)


@dataclass
class Rig:
    url: str
    http: httpx.AsyncClient
    runtime: Runtime
    settings: MessagingSettings
    double: TwilioDouble
    contacts: FakeContacts
    mail: SmtpCollector
    org_id: str

    async def rows(self, **where: str) -> list[dict[str, Any]]:
        query = select(message)
        for name, value in where.items():
            query = query.where(message.c[name] == value)
        async with self.runtime.sessionmaker() as session:
            return [dict(r._mapping) for r in (await session.execute(query)).all()]

    async def wait_rows(
        self, predicate: Callable[[list[dict[str, Any]]], bool], **where: str
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for _ in range(150):
            rows = await self.rows(**where)
            if predicate(rows):
                return rows
            await asyncio.sleep(0.1)
        raise AssertionError(f"rows never matched: {rows}")

    async def events(self) -> list[dict[str, Any]]:
        records = await read_topic(
            self.settings.kafka_bootstrap, f"{self.settings.topic_prefix}careloop.messaging"
        )
        return [
            {"type": dict(r.headers)["ce_type"].decode(), **json.loads(r.value or b"{}")}
            for r in records
        ]

    async def wait_events(self, predicate: Callable[[list[dict[str, Any]]], bool]) -> list[Any]:
        events: list[dict[str, Any]] = []
        for _ in range(100):
            events = await self.events()
            if predicate(events):
                return events
            await asyncio.sleep(0.2)
        raise AssertionError(f"events never matched: {events}")


@pytest.fixture
def mail() -> Iterator[tuple[SmtpCollector, int]]:
    with smtp_server() as server:
        yield server


@pytest.fixture
async def rig(
    make_database: Callable[[str], Awaitable[str]],
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    vault_root_token: str,
    topic_prefix: str,
    unique_id: str,
    mail: tuple[SmtpCollector, int],
) -> AsyncIterator[Rig]:
    dsn = await make_database("messaging")
    await upgrade_async(MIGRATIONS, dsn)
    # What an operator provisions: the recipient key in messaging's own KV space.
    key_path = f"careloop/messaging/recipient-key-{unique_id}"
    hvac.Client(url=vault_addr, token=vault_root_token).secrets.kv.v2.create_or_update_secret(
        path=key_path,
        secret={"key": base64.b64encode(secrets.token_bytes(32)).decode()},
        mount_point="secret",
    )
    double = TwilioDouble("AC" + secrets.token_hex(16), "test-" + secrets.token_hex(16))
    contacts = FakeContacts()
    port = free_port()
    collector, smtp_port = mail
    async with serve_in_task(double.app) as twilio_url:
        settings = MessagingSettings(
            environment="test",
            database_url=dsn,
            kafka_bootstrap=kafka_bootstrap,
            vault_addr=vault_addr,
            vault_token=vault_tokens["messaging"],
            topic_prefix=topic_prefix,
            log_json=False,
            delivery_mode="provider",
            recipient_key_secret_path=key_path,
            twilio_api_base=twilio_url,
            twilio_account_sid=double.account_sid,
            twilio_auth_token=double.auth_token,
            twilio_from_number="+15550009999",
            twilio_status_callback_url=f"http://127.0.0.1:{port}/webhooks/twilio/status",
            smtp_host="127.0.0.1",
            smtp_port=smtp_port,
            smtp_security="none",
            secure_link_base="https://portal.example.test/m",
            delivery_backoff_s=0.1,
            delivery_poll_interval_s=0.05,
            delivery_max_attempts=3,
        )
        app = create_app(settings, contacts=contacts)
        async with serve_in_task(app, port=port) as url, httpx.AsyncClient(base_url=url) as http:
            yield Rig(
                url,
                http,
                app.state.runtime,
                settings,
                double,
                contacts,
                collector,
                f"org-{unique_id}",
            )


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def test_a_reminder_becomes_one_sms_with_the_rendered_body(rig: Rig) -> None:
    patient, appointment = new_id("pat"), new_id("appt")
    rig.contacts.patients[patient] = sms_patient()
    event = reminder_due(org_id=rig.org_id, patient_id=patient, appointment_id=appointment)

    (event_id,) = await publish(rig.settings, event)
    (row,) = await rig.wait_rows(lambda rs: rs and rs[0]["status"] == "sent", patient_id=patient)

    (sms,) = rig.double.messages
    assert sms.to == E164
    assert sms.body.startswith("Bayview Family Practice: reminder of your appointment on")
    # 14:30 UTC on 4 March 2031 is 9:30 in New York (EST).
    assert "Tue Mar 4 at 9:30 AM" in sms.body
    assert rig.runtime.state["links"].url(row["id"]) in sms.body
    assert rig.runtime.state["links"].url(row["id"]).startswith("https://portal.example.test/m/")
    assert (row["provider_id"], row["channel"], row["attempts"]) == (sms.sid, "sms", 1)
    # The address is stored only encrypted.
    assert E164.encode() not in row["recipient_ct"]

    # The same event again, and the same touch under a new event id: still one message.
    await publish(rig.settings, event, event_id=event_id)
    await publish(rig.settings, event)
    await rig.wait_events(
        lambda es: [e["type"] for e in es] == ["careloop.messaging.message.sent.v1"]
    )
    await asyncio.sleep(1.0)
    assert len(rig.double.messages) == 1
    assert len(await rig.rows(patient_id=patient)) == 1
    (sent,) = await rig.events()
    assert sent["message_id"] == row["id"]
    assert sent["channel"] == "sms"
    assert PHONE not in json.dumps(sent)
    assert E164 not in json.dumps(sent)


async def test_an_opted_out_recipient_is_skipped(rig: Rig) -> None:
    patient = new_id("pat")
    rig.contacts.patients[patient] = sms_patient(allowed_channels=[Channel.SMS])
    cipher: RecipientCipher = rig.runtime.state["cipher"]
    async with rig.runtime.sessionmaker() as session, session.begin():
        index = cipher.index(rig.org_id, Recipient(Channel.SMS, E164))
        await OptOuts(session).add(rig.org_id, Channel.SMS, index, rig.runtime.clock.now())

    await publish(
        rig.settings, reminder_due(org_id=rig.org_id, patient_id=patient, appointment_id="a-1")
    )

    (row,) = await rig.wait_rows(lambda rs: bool(rs), patient_id=patient)
    assert (row["status"], row["skip_reason"]) == ("skipped", "opted_out")
    events = await rig.wait_events(lambda es: len(es) == 1)
    assert (events[0]["type"], events[0]["reason"]) == (
        "careloop.messaging.message.skipped.v1",
        "opted_out",
    )
    assert rig.double.messages == []


async def test_a_patient_who_prefers_the_portal_gets_the_reminder_in_the_inbox(rig: Rig) -> None:
    patient = new_id("pat")
    rig.contacts.patients[patient] = sms_patient(
        allowed_channels=[Channel.SMS, Channel.PORTAL],
        preferred_channel=Channel.PORTAL,
        patient_id=patient,
    )
    await publish(
        rig.settings, reminder_due(org_id=rig.org_id, patient_id=patient, appointment_id="a-p")
    )

    (row,) = await rig.wait_rows(
        lambda rs: rs[:1] != [] and rs[0]["status"] == "sent", patient_id=patient
    )
    assert row["channel"] == "portal"
    async with rig.runtime.sessionmaker() as session:
        items = (
            await session.execute(select(inbox_item).where(inbox_item.c.patient_id == patient))
        ).all()
    assert [(i.message_id, i.org_id) for i in items] == [(row["id"], rig.org_id)]
    # Stored encrypted, and no text message went out for it.
    assert b"Bayview" not in items[0].body_ct
    assert rig.double.messages == []


async def test_preferences_decide_the_channel_or_the_skip(rig: Rig) -> None:
    no_auto, no_channel, email_only = new_id("pat"), new_id("pat"), new_id("pat")
    rig.contacts.patients[no_auto] = sms_patient(allow_automated_messages=False)
    rig.contacts.patients[no_channel] = sms_patient(phones=[], allowed_channels=[Channel.SMS])
    rig.contacts.patients[email_only] = sms_patient(
        allowed_channels=[Channel.EMAIL], preferred_channel=None
    )
    await publish(
        rig.settings,
        *(
            reminder_due(org_id=rig.org_id, patient_id=p, appointment_id=new_id("appt"))
            for p in (no_auto, no_channel, email_only)
        ),
    )
    (auto,) = await rig.wait_rows(lambda rs: bool(rs), patient_id=no_auto)
    (channel,) = await rig.wait_rows(lambda rs: bool(rs), patient_id=no_channel)
    (mailed,) = await rig.wait_rows(
        lambda rs: rs and rs[0]["status"] == "sent", patient_id=email_only
    )
    assert auto["skip_reason"] == "automated_not_allowed"
    assert channel["skip_reason"] == "no_allowed_channel"
    assert mailed["channel"] == "email"
    (email,) = rig.mail.messages
    assert email["To"] == "pat@example.org"
    assert email["Subject"] == "Appointment reminder from Bayview Family Practice"
    assert email["Message-ID"] == f"<{mailed['id']}@careloop.localhost>"


async def test_the_fourth_automated_message_in_a_week_is_skipped(rig: Rig) -> None:
    patient = new_id("pat")
    rig.contacts.patients[patient] = sms_patient()
    touches = ["confirmation", "3_days_before", "1_day_before", "morning_of"]
    for touch in touches:
        # One at a time, in order, as scheduling's timers would fire them.
        await publish(
            rig.settings,
            reminder_due(org_id=rig.org_id, patient_id=patient, appointment_id="a-1", touch=touch),
        )
        await rig.wait_rows(lambda rs, n=touches.index(touch) + 1: len(rs) == n, patient_id=patient)

    rows = await rig.wait_rows(
        lambda rs: sorted(r["status"] for r in rs) == ["sent", "sent", "sent", "skipped"],
        patient_id=patient,
    )
    (skipped,) = [r for r in rows if r["status"] == "skipped"]
    assert (skipped["touch"], skipped["skip_reason"]) == ("morning_of", "contact_budget")
    assert len(rig.double.messages) == 3
    assert rig.settings.contact_budget_per_week == 3


async def test_a_throttled_send_is_retried_and_sent(rig: Rig) -> None:
    patient = new_id("pat")
    rig.contacts.patients[patient] = sms_patient()
    rig.double.fail_next(1, status=429)

    await publish(
        rig.settings, reminder_due(org_id=rig.org_id, patient_id=patient, appointment_id="a-1")
    )

    (row,) = await rig.wait_rows(lambda rs: rs and rs[0]["status"] == "sent", patient_id=patient)
    assert row["attempts"] == 2
    assert rig.double.requests == 2
    assert len(rig.double.messages) == 1


async def test_a_permanent_refusal_fails_with_an_event(rig: Rig) -> None:
    patient = new_id("pat")
    rig.contacts.patients[patient] = sms_patient()
    rig.double.fail_next(1, status=400)

    await publish(
        rig.settings, reminder_due(org_id=rig.org_id, patient_id=patient, appointment_id="a-1")
    )

    (row,) = await rig.wait_rows(lambda rs: rs and rs[0]["status"] == "failed", patient_id=patient)
    assert row["attempts"] == 1
    assert row["last_error"] == "Twilio HTTP 400, code 20500"
    (failed,) = await rig.wait_events(lambda es: len(es) == 1)
    assert failed["type"] == "careloop.messaging.message.failed.v1"
    assert failed["reason"] == "Twilio HTTP 400, code 20500"
    assert E164 not in json.dumps(failed)


async def test_retries_run_out_then_the_message_fails(rig: Rig) -> None:
    patient = new_id("pat")
    rig.contacts.patients[patient] = sms_patient()
    rig.double.fail_next(3, status=503)

    await publish(
        rig.settings, reminder_due(org_id=rig.org_id, patient_id=patient, appointment_id="a-1")
    )

    (row,) = await rig.wait_rows(lambda rs: rs and rs[0]["status"] == "failed", patient_id=patient)
    assert row["attempts"] == 3 == rig.double.requests


async def test_signed_status_callbacks_update_the_message(rig: Rig) -> None:
    patient = new_id("pat")
    rig.contacts.patients[patient] = sms_patient()
    await publish(
        rig.settings, reminder_due(org_id=rig.org_id, patient_id=patient, appointment_id="a-1")
    )
    (row,) = await rig.wait_rows(lambda rs: rs and rs[0]["status"] == "sent", patient_id=patient)

    unsigned = await rig.http.post(
        "/webhooks/twilio/status",
        data={"MessageSid": row["provider_id"], "MessageStatus": "delivered"},
    )
    forged = await rig.http.post(
        "/webhooks/twilio/status",
        data={"MessageSid": row["provider_id"], "MessageStatus": "delivered"},
        headers={SIGNATURE_HEADER: "bm90IGEgc2lnbmF0dXJl"},
    )
    for refused in (unsigned, forged):
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
    assert (await rig.rows(patient_id=patient))[0]["status"] == "sent"

    delivered = await rig.double.fire_status_callback(row["provider_id"], "delivered")
    assert delivered.status_code == 204, delivered.text
    assert (await rig.rows(patient_id=patient))[0]["status"] == "delivered"
    # A late "sent" callback does not move it back.
    late = await rig.double.fire_status_callback(row["provider_id"], "sent")
    assert late.status_code == 204
    assert (await rig.rows(patient_id=patient))[0]["status"] == "delivered"


async def test_an_undelivered_callback_fails_the_message(rig: Rig) -> None:
    patient = new_id("pat")
    rig.contacts.patients[patient] = sms_patient()
    await publish(
        rig.settings, reminder_due(org_id=rig.org_id, patient_id=patient, appointment_id="a-1")
    )
    (row,) = await rig.wait_rows(lambda rs: rs and rs[0]["status"] == "sent", patient_id=patient)

    response = await rig.double.fire_status_callback(
        row["provider_id"], "undelivered", error_code=30003
    )

    assert response.status_code == 204
    (failed,) = await rig.rows(patient_id=patient)
    assert (failed["status"], failed["last_error"]) == (
        "failed",
        "Twilio status undelivered (code 30003)",
    )
    await rig.wait_events(
        lambda es: (
            [e["type"] for e in es]
            == ["careloop.messaging.message.sent.v1", "careloop.messaging.message.failed.v1"]
        )
    )


async def test_an_unknown_patient_and_other_scheduling_events_are_not_dead_lettered(
    rig: Rig,
) -> None:
    due = reminder_due(org_id=rig.org_id, patient_id="pat-nobody", appointment_id="a-1")
    booked = AppointmentBooked(
        appointment_id="a-1",
        patient_id="pat-nobody",
        org_id=rig.org_id,
        location_id="loc-north",
        provider_id="prov-1",
        appointment_type_id="type-1",
        start_at=due.start_at,
        end_at=due.start_at,
        status="booked",
        confirmation="unconfirmed",
        occurred_at=due.due_at,
    )
    await publish(rig.settings, booked, due)

    (row,) = await rig.wait_rows(lambda rs: bool(rs), patient_id="pat-nobody")
    assert row["skip_reason"] == "patient_not_found"
    consumer = rig.runtime.consumers[0]
    assert consumer.stats.dead_lettered == 0
    assert consumer.stats.skipped >= 1
    assert rig.contacts.calls == 1


async def inbound(rig: Rig, body: str, *, sign: bool = True) -> httpx.Response:
    url = f"{rig.url}/webhooks/twilio/inbound"
    form = {
        "MessageSid": "SM" + secrets.token_hex(16),
        "AccountSid": rig.double.account_sid,
        "From": E164,
        "To": "+15550009999",
        "Body": body,
    }
    headers = (
        {SIGNATURE_HEADER: compute_signature(rig.double.auth_token, url, form)} if sign else {}
    )
    return await rig.http.post("/webhooks/twilio/inbound", data=form, headers=headers)


async def test_stop_opts_the_number_out_and_start_back_in(rig: Rig) -> None:
    patient = new_id("pat")
    rig.contacts.patients[patient] = sms_patient(allowed_channels=[Channel.SMS])

    async def remind(appointment: str) -> dict[str, Any]:
        await publish(
            rig.settings,
            reminder_due(org_id=rig.org_id, patient_id=patient, appointment_id=appointment),
        )
        (row,) = await rig.wait_rows(
            lambda rs: bool(rs) and rs[0]["status"] in {"sent", "skipped"},
            appointment_id=appointment,
        )
        return row

    assert (await remind("a-1"))["status"] == "sent"
    unsigned = await inbound(rig, "STOP", sign=False)
    assert unsigned.status_code == 403
    stopped = await inbound(rig, " stop ")
    assert stopped.status_code == 200, stopped.text
    assert stopped.headers["content-type"].startswith("application/xml")
    skipped = await remind("a-2")
    assert (skipped["status"], skipped["skip_reason"]) == ("skipped", "opted_out")

    # Free text that merely contains a keyword changes nothing; START does.
    assert (await inbound(rig, "please don't stop")).status_code == 200
    assert (await remind("a-3"))["skip_reason"] == "opted_out"
    assert (await inbound(rig, "START")).status_code == 200
    assert (await remind("a-4"))["status"] == "sent"


async def test_keyword_replies_answer_the_latest_reminder_and_are_audited(rig: Rig) -> None:
    patient = new_id("pat")
    rig.contacts.patients[patient] = sms_patient(allowed_channels=[Channel.SMS])
    for appointment in ("a-old", "a-new"):
        await publish(
            rig.settings,
            reminder_due(org_id=rig.org_id, patient_id=patient, appointment_id=appointment),
        )
        await rig.wait_rows(
            lambda rs: bool(rs) and rs[0]["status"] == "sent", appointment_id=appointment
        )

    confirm = await inbound(rig, " c ")
    reschedule = await inbound(rig, "Reschedule")
    chatter = await inbound(rig, "can I bring my kid?")
    stop = await inbound(rig, "STOP")

    assert {r.status_code for r in (confirm, reschedule, chatter, stop)} == {200}
    events = await rig.wait_events(
        lambda es: (
            sum(e["type"] == "careloop.messaging.reply.received.v2" for e in es) == 2
            and sum(e["type"] == "careloop.audit.access.recorded.v1" for e in es) >= 3
        )
    )
    replies = [e for e in events if e["type"] == "careloop.messaging.reply.received.v2"]
    assert [(r["intent"], r["appointment_id"]) for r in replies] == [
        ("confirm", "a-new"),
        ("reschedule", "a-new"),
    ]
    assert all(r["patient_id"] == patient and r["org_id"] == rig.org_id for r in replies)
    audits = [e for e in events if e["type"] == "careloop.audit.access.recorded.v1"]
    answered = [a for a in audits if a["resource_type"] == "Communication"]
    consent = [a for a in audits if a["resource_type"] == "Consent"]
    assert [a["actor_id"] for a in answered] == [patient, patient]
    assert {a["resource_id"] for a in answered} == {r["reply_id"] for r in replies}
    assert len(consent) == 1
    assert consent[0]["action"] == "update"


async def test_a_late_status_callback_does_not_change_which_message_a_reply_answers(
    rig: Rig,
) -> None:
    patient = new_id("pat")
    rig.contacts.patients[patient] = sms_patient(allowed_channels=[Channel.SMS])
    older = await send_reminder(rig, patient, "a-older")
    await send_reminder(rig, patient, "a-newer")
    # The carrier reports the older message delivered only now, after the newer one went.
    late = await rig.double.fire_status_callback(older["provider_id"], "delivered")
    assert late.status_code == 204, late.text

    assert (await inbound(rig, "C")).status_code == 200
    events = await rig.wait_events(
        lambda es: any(e["type"] == "careloop.messaging.reply.received.v2" for e in es)
    )
    (reply,) = [e for e in events if e["type"] == "careloop.messaging.reply.received.v2"]
    assert (reply["intent"], reply["appointment_id"]) == ("confirm", "a-newer")


# Distinctive synthetic details scheduling knows and messaging must never put in an SMS.
OFFER_PHI = ("Dr. Barnaby Illingworth", "Colposcopy follow-up", "Philippa")


async def send_reminder(rig: Rig, patient: str, appointment: str) -> dict[str, Any]:
    await publish(
        rig.settings,
        reminder_due(org_id=rig.org_id, patient_id=patient, appointment_id=appointment),
    )
    (row,) = await rig.wait_rows(
        lambda rs: bool(rs) and rs[0]["status"] == "sent", appointment_id=appointment
    )
    return row


async def send_offer(rig: Rig, patient: str, appointment: str, offer_id: str) -> dict[str, Any]:
    offer = reschedule_offered(
        org_id=rig.org_id, patient_id=patient, appointment_id=appointment, offer_id=offer_id
    )
    await publish(rig.settings, offer)
    (row,) = await rig.wait_rows(
        lambda rs: bool(rs) and rs[0]["status"] == "sent", touch_key=f"{offer_id}:offer"
    )
    return row


async def test_an_offer_becomes_one_sms_listing_the_times_in_local_time(rig: Rig) -> None:
    patient, appointment, offer_id = new_id("pat"), new_id("appt"), new_id("offer")
    rig.contacts.patients[patient] = sms_patient()
    offer = reschedule_offered(
        org_id=rig.org_id, patient_id=patient, appointment_id=appointment, offer_id=offer_id
    )

    (event_id,) = await publish(rig.settings, offer)
    (row,) = await rig.wait_rows(
        lambda rs: bool(rs) and rs[0]["status"] == "sent", patient_id=patient
    )

    (sms,) = rig.double.messages
    assert sms.to == E164
    # 14:00, 19:30 and 13:15 UTC in early March are 9:00, 14:30 and 8:15 in New York.
    assert sms.body == (
        "Bayview Family Practice: new times for your appointment: 1) Wed Mar 5 at 9:00 AM; "
        "2) Thu Mar 6 at 2:30 PM; 3) Fri Mar 7 at 8:15 AM. Reply 1, 2 or 3 to choose. "
        f"Details: {rig.runtime.state['links'].url(row['id'])} "
        "Reply STOP to opt out, HELP for help."
    )
    assert not any(phi.casefold() in sms.body.casefold() for phi in OFFER_PHI)
    assert (row["touch"], row["touch_key"], row["appointment_id"]) == (
        "reschedule_offer",
        f"{offer_id}:offer",
        appointment,
    )
    assert row["offer_options"] == offer.options
    assert row["offer_expires_at"] == offer.expires_at

    # The same event again, and the same offer under a new event id: still one message.
    await publish(rig.settings, offer, event_id=event_id)
    await publish(rig.settings, offer)
    await rig.wait_events(
        lambda es: [e["type"] for e in es] == ["careloop.messaging.message.sent.v1"]
    )
    await asyncio.sleep(1.0)
    assert len(rig.double.messages) == 1
    assert len(await rig.rows(patient_id=patient)) == 1


async def test_an_offer_goes_out_over_a_spent_budget_and_does_not_spend_it(rig: Rig) -> None:
    # The offer answers the patient's own R: the budget caps unsolicited contacts only.
    patient, appointment = new_id("pat"), new_id("appt")
    rig.contacts.patients[patient] = sms_patient()
    for touch in ("confirmation", "3_days_before", "1_day_before"):
        await publish(
            rig.settings,
            reminder_due(
                org_id=rig.org_id, patient_id=patient, appointment_id=appointment, touch=touch
            ),
        )
    await rig.wait_rows(lambda rs: [r["status"] for r in rs] == ["sent"] * 3, patient_id=patient)

    await send_offer(rig, patient, appointment, new_id("offer"))
    await publish(
        rig.settings,
        reminder_due(
            org_id=rig.org_id, patient_id=patient, appointment_id=appointment, touch="morning_of"
        ),
    )
    (morning,) = await rig.wait_rows(lambda rs: bool(rs), touch_key=f"{appointment}:morning_of")
    assert (morning["status"], morning["skip_reason"]) == ("skipped", "contact_budget")
    assert len(rig.double.messages) == 4


async def test_an_opted_out_number_gets_no_offer(rig: Rig) -> None:
    patient = new_id("pat")
    rig.contacts.patients[patient] = sms_patient(allowed_channels=[Channel.SMS])
    cipher: RecipientCipher = rig.runtime.state["cipher"]
    async with rig.runtime.sessionmaker() as session, session.begin():
        index = cipher.index(rig.org_id, Recipient(Channel.SMS, E164))
        await OptOuts(session).add(rig.org_id, Channel.SMS, index, rig.runtime.clock.now())

    offer_id = new_id("offer")
    await publish(
        rig.settings,
        reschedule_offered(
            org_id=rig.org_id, patient_id=patient, appointment_id="a-1", offer_id=offer_id
        ),
    )

    (row,) = await rig.wait_rows(lambda rs: bool(rs), touch_key=f"{offer_id}:offer")
    assert (row["status"], row["skip_reason"]) == ("skipped", "opted_out")
    assert rig.double.messages == []


def replies(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "careloop.messaging.reply.received.v2"]


async def test_a_numbered_reply_chooses_an_option_of_the_latest_offer(rig: Rig) -> None:
    patient, appointment = new_id("pat"), new_id("appt")
    rig.contacts.patients[patient] = sms_patient(allowed_channels=[Channel.SMS])
    await send_reminder(rig, patient, appointment)
    offer = await send_offer(rig, patient, appointment, new_id("offer"))

    # Out of range (three options listed), a number among words, then a real choice.
    for body in ("7", "2 please", " 2 "):
        assert (await inbound(rig, body)).status_code == 200

    events = await rig.wait_events(
        lambda es: (
            len(replies(es)) == 1
            and any(e["type"] == "careloop.audit.access.recorded.v1" for e in es)
        )
    )
    (reply,) = replies(events)
    assert (reply["intent"], reply["choice"]) == ("choose", 2)
    assert (reply["appointment_id"], reply["message_id"]) == (appointment, offer["id"])
    assert (reply["patient_id"], reply["org_id"], reply["via"]) == (
        patient,
        rig.org_id,
        "sms",
    )
    assert E164 not in json.dumps(reply)
    (audit,) = [e for e in events if e["type"] == "careloop.audit.access.recorded.v1"]
    assert (audit["resource_type"], audit["actor_id"], audit["resource_id"]) == (
        "Communication",
        patient,
        reply["reply_id"],
    )


async def test_a_number_after_a_plain_reminder_is_ignored(rig: Rig) -> None:
    patient, appointment = new_id("pat"), new_id("appt")
    rig.contacts.patients[patient] = sms_patient(allowed_channels=[Channel.SMS])
    await send_reminder(rig, patient, appointment)

    assert (await inbound(rig, "2")).status_code == 200
    # A keyword afterwards still answers the reminder: once its event is out, the
    # number's would have been too (same partition, written first).
    assert (await inbound(rig, "C")).status_code == 200

    events = await rig.wait_events(lambda es: len(replies(es)) >= 1)
    await asyncio.sleep(0.5)
    events = await rig.events()
    assert [(r["intent"], r["choice"]) for r in replies(events)] == [("confirm", None)]
    audits = [e for e in events if e["type"] == "careloop.audit.access.recorded.v1"]
    assert len(audits) == 1


async def test_an_offer_that_lapsed_while_queued_is_not_sent(rig: Rig) -> None:
    patient, offer_id = new_id("pat"), new_id("offer")
    rig.contacts.patients[patient] = sms_patient()
    lapsed = reschedule_offered(
        org_id=rig.org_id,
        patient_id=patient,
        appointment_id="a-1",
        offer_id=offer_id,
        expires_at=datetime.now(UTC) - timedelta(minutes=1),
    )

    await publish(rig.settings, lapsed)

    (row,) = await rig.wait_rows(
        lambda rs: bool(rs) and rs[0]["status"] == "failed", patient_id=patient
    )
    assert (row["last_error"], row["attempts"]) == ("offer expired before sending", 0)
    assert rig.double.requests == 0


async def test_migrations_match_the_tables(rig: Rig) -> None:
    dsn = rig.settings.database_url.get_secret_value()
    head = ScriptDirectory.from_config(alembic_config(MIGRATIONS, dsn)).get_current_head()
    engine = create_async_engine(dsn)
    try:
        async with engine.connect() as conn:

            def inspect(sync_conn: Any) -> tuple[str | None, list[Any]]:
                context = MigrationContext.configure(sync_conn)
                return context.get_current_revision(), compare_metadata(context, metadata)

            current, diff = await conn.run_sync(inspect)
    finally:
        await engine.dispose()
    assert current == head
    assert diff == []
