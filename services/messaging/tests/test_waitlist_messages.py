"""Waitlist messages: the offer SMS, the "that time is gone" SMS, and the `Y` that takes
an offer. Unit tests for the templates and rules; service tests against real
PostgreSQL, Kafka and OpenBao through the rig of `test_service.py` (Twilio double,
patients faked at its port)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from careloop_contracts import WaitlistOfferClosed, WaitlistSlotOffered
from careloop_messaging.domain.defaults import BUILT_IN_TEMPLATES
from careloop_messaging.domain.outreach import (
    UNSOLICITED_EXEMPT_TOUCHES,
    WAITLIST_CLOSED_TOUCH,
    WAITLIST_OFFER_TOUCH,
    MessageStatus,
    message_kind,
    offer_id_of,
    waitlist_touch_key,
)
from careloop_messaging.domain.templates import (
    INSECURE_FIELDS,
    Channel,
    MessageKind,
    SenderProfile,
    TemplateRenderer,
)
from careloop_messaging.store.repository import Messages, NewMessage
from careloop_messaging.testing.rig import publish, reminder_due

from .test_service import E164, Rig, inbound, new_id, sms_patient
from .test_service import mail as mail
from .test_service import rig as rig

START = datetime(2031, 3, 5, 17, 30, tzinfo=UTC)  # 12:30 PM in New York (EST)
PHI = ("Philippa", "Illingworth", "1954-07-19", "Dr. Barnaby", "Colposcopy")
WAITLIST_KINDS = (MessageKind.WAITLIST_OFFER, MessageKind.WAITLIST_CLOSED)
REPLY = "careloop.messaging.reply.received.v2"
AUDIT = "careloop.audit.access.recorded.v1"


# --- unit -------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("kind", WAITLIST_KINDS)
@pytest.mark.parametrize("channel", [Channel.SMS, Channel.EMAIL, Channel.PORTAL])
@pytest.mark.parametrize("language", ["en", "es"])
def test_built_in_waitlist_templates_pass_the_phi_check_and_fit_one_sms(
    kind: MessageKind, channel: Channel, language: str
) -> None:
    template = next(
        t
        for k, t in BUILT_IN_TEMPLATES.items()
        if (k.kind, k.channel, k.language) == (kind, channel, language)
    )
    renderer = TemplateRenderer()
    # The strictest rules: a sensitive location, insecure-channel fields only.
    renderer.check(template, sensitive=True)
    fields = {
        "appointment_date": "Wed Mar 5",
        "appointment_time": "12:30 PM",
        "secure_link": "https://portal.example.test/m/" + "x" * 40,
        "reply_keywords": "Y, STOP, HELP",
    }
    rendered = renderer.render(template, fields, sender=SenderProfile("P" * 40))
    assert "Wed Mar 5" in rendered.body
    if channel is Channel.SMS:
        assert len(rendered.body) <= 320
        assert "STOP" in rendered.body
    if kind is MessageKind.WAITLIST_OFFER and channel is not Channel.PORTAL:
        assert " Y " in rendered.body
    if channel is Channel.EMAIL:
        assert rendered.subject is not None
        assert "Wed Mar 5" not in rendered.subject  # subjects name no appointment details


@pytest.mark.unit
def test_waitlist_templates_refuse_a_field_outside_the_allowed_set() -> None:
    template = BUILT_IN_TEMPLATES[
        next(k for k in BUILT_IN_TEMPLATES if k.kind is MessageKind.WAITLIST_OFFER)
    ]
    renderer = TemplateRenderer()
    with pytest.raises(ValueError, match="provider_name"):
        renderer.render(
            template,
            {
                "appointment_date": "d",
                "appointment_time": "t",
                "secure_link": "l",
                "provider_name": "Dr. Barnaby",
            },
            sender=SenderProfile("Bayview"),
        )
    assert "provider_name" not in INSECURE_FIELDS


@pytest.mark.unit
def test_waitlist_touches_map_to_their_kinds_and_are_exempt_from_the_budget() -> None:
    assert message_kind(WAITLIST_OFFER_TOUCH) is MessageKind.WAITLIST_OFFER
    assert message_kind(WAITLIST_CLOSED_TOUCH) is MessageKind.WAITLIST_CLOSED
    assert {WAITLIST_OFFER_TOUCH, WAITLIST_CLOSED_TOUCH} <= UNSOLICITED_EXEMPT_TOUCHES
    key = waitlist_touch_key("3f0c-offer:x", WAITLIST_OFFER_TOUCH)
    assert offer_id_of(key) == "3f0c-offer:x"


# --- service ----------------------------------------------------------------------


def slot_offered(rig: Rig, patient: str, offer_id: str, **changes: Any) -> WaitlistSlotOffered:
    values: dict[str, Any] = {
        "offer_id": offer_id,
        "entry_id": new_id("entry"),
        "patient_id": patient,
        "org_id": rig.org_id,
        "location_id": "loc-north",
        "start_at": START,
        "location_time_zone": "America/New_York",
        "practice_name": "Bayview Family Practice",
        "sensitive_location": False,
        "expires_at": datetime.now(UTC) + timedelta(hours=1),
    }
    values.update(changes)
    return WaitlistSlotOffered(**values)


def offer_closed(
    rig: Rig, offered: WaitlistSlotOffered, reason: str, **changes: Any
) -> WaitlistOfferClosed:
    values: dict[str, Any] = {
        "offer_id": offered.offer_id,
        "entry_id": offered.entry_id,
        "patient_id": offered.patient_id,
        "org_id": rig.org_id,
        "location_id": offered.location_id,
        "reason": reason,
        "start_at": offered.start_at,
        "location_time_zone": offered.location_time_zone,
        "practice_name": offered.practice_name,
        "sensitive_location": offered.sensitive_location,
        "closed_at": datetime.now(UTC),
    }
    values.update(changes)
    return WaitlistOfferClosed(**values)


async def send_waitlist_offer(rig: Rig, patient: str) -> tuple[WaitlistSlotOffered, dict[str, Any]]:
    offered = slot_offered(rig, patient, new_id("offer"))
    await publish(rig.settings, offered)
    (row,) = await rig.wait_rows(
        lambda rs: bool(rs) and rs[0]["status"] == "sent",
        touch_key=f"{offered.offer_id}:waitlist_offer",
    )
    return offered, row


def replies(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == REPLY]


@pytest.mark.service
async def test_an_offer_becomes_one_sms_outside_the_contact_budget(rig: Rig) -> None:
    patient = new_id("pat")
    rig.contacts.patients[patient] = sms_patient()
    appointment = new_id("appt")
    for touch in ("confirmation", "3_days_before", "1_day_before"):
        await publish(
            rig.settings,
            reminder_due(
                org_id=rig.org_id, patient_id=patient, appointment_id=appointment, touch=touch
            ),
        )
    await rig.wait_rows(lambda rs: [r["status"] for r in rs] == ["sent"] * 3, patient_id=patient)

    offered, row = await send_waitlist_offer(rig, patient)

    sms = rig.double.messages[-1]
    assert sms.to == E164
    assert sms.body == (
        "Bayview Family Practice: an earlier time opened up: Wed Mar 5 at 12:30 PM. "
        "Reply Y to take it (first reply gets it). "
        f"Details: {rig.runtime.state['links'].url(row['id'])} "
        "Reply STOP to opt out, HELP for help."
    )
    assert not any(p.casefold() in sms.body.casefold() for p in PHI)
    assert (row["touch"], row["appointment_id"]) == ("waitlist_offer", None)
    assert row["offer_expires_at"] == offered.expires_at
    # Over a spent budget (three reminders this week), and not spending it: a second
    # offer goes out too, and the next reminder is refused by the reminders alone.
    await send_waitlist_offer(rig, patient)
    assert len(rig.double.messages) == 5
    await publish(
        rig.settings,
        reminder_due(
            org_id=rig.org_id, patient_id=patient, appointment_id=appointment, touch="morning_of"
        ),
    )
    (morning,) = await rig.wait_rows(lambda rs: bool(rs), touch_key=f"{appointment}:morning_of")
    assert (morning["status"], morning["skip_reason"]) == ("skipped", "contact_budget")


@pytest.mark.service
async def test_y_or_yes_takes_the_latest_waitlist_offer(rig: Rig) -> None:
    patient = new_id("pat")
    rig.contacts.patients[patient] = sms_patient(allowed_channels=[Channel.SMS])
    offered, row = await send_waitlist_offer(rig, patient)

    assert (await inbound(rig, " y ")).status_code == 200
    assert (await inbound(rig, "YES")).status_code == 200

    events = await rig.wait_events(lambda es: len(replies(es)) == 2)
    for reply in replies(events):
        assert (reply["intent"], reply["offer_id"], reply["via"]) == (
            "accept",
            offered.offer_id,
            "sms",
        )
        assert (reply["message_id"], reply["appointment_id"]) == (row["id"], None)
        assert (reply["patient_id"], reply["org_id"]) == (patient, rig.org_id)
        assert E164 not in json.dumps(reply)
    audits = await rig.wait_events(lambda es: sum(e["type"] == AUDIT for e in es) == 2)
    communication = [a for a in audits if a["type"] == AUDIT]
    assert {(a["resource_type"], a["actor_id"]) for a in communication} == {
        ("Communication", patient)
    }


@pytest.mark.service
async def test_c_and_r_still_answer_the_visit_and_yes_keeps_its_opt_in_meaning(
    rig: Rig,
) -> None:
    patient, appointment = new_id("pat"), new_id("appt")
    rig.contacts.patients[patient] = sms_patient(allowed_channels=[Channel.SMS])
    await publish(
        rig.settings,
        reminder_due(org_id=rig.org_id, patient_id=patient, appointment_id=appointment),
    )
    await rig.wait_rows(lambda rs: bool(rs) and rs[0]["status"] == "sent", patient_id=patient)
    await send_waitlist_offer(rig, patient)

    # C answers the visit's reminder, never the waitlist offer.
    assert (await inbound(rig, "C")).status_code == 200
    events = await rig.wait_events(lambda es: len(replies(es)) == 1)
    (confirm,) = replies(events)
    assert (confirm["intent"], confirm["appointment_id"], confirm["offer_id"]) == (
        "confirm",
        appointment,
        None,
    )

    # After STOP, YES is START again: nothing is accepted and texts resume.
    assert (await inbound(rig, "STOP")).status_code == 200
    assert (await inbound(rig, "YES")).status_code == 200
    later = new_id("appt")
    await publish(
        rig.settings, reminder_due(org_id=rig.org_id, patient_id=patient, appointment_id=later)
    )
    (row,) = await rig.wait_rows(
        lambda rs: bool(rs) and rs[0]["status"] in {"sent", "skipped"}, appointment_id=later
    )
    assert row["status"] == "sent"
    assert len(replies(await rig.events())) == 1


@pytest.mark.service
async def test_a_taken_offer_gets_one_gone_sms_and_an_expired_one_none(rig: Rig) -> None:
    taken_patient, expired_patient = new_id("pat"), new_id("pat")
    rig.contacts.patients[taken_patient] = sms_patient(phones=["(555) 201-0001"])
    rig.contacts.patients[expired_patient] = sms_patient(phones=["(555) 201-0002"])
    taken, _ = await send_waitlist_offer(rig, taken_patient)
    expired, _ = await send_waitlist_offer(rig, expired_patient)

    await publish(rig.settings, offer_closed(rig, expired, "expired"))
    await publish(rig.settings, offer_closed(rig, taken, "taken"))
    # A late Y afterwards: the same offer's "gone" message is not sent twice.
    await publish(rig.settings, offer_closed(rig, taken, "answered_late"))

    (gone,) = await rig.wait_rows(
        lambda rs: bool(rs) and rs[0]["status"] == "sent",
        touch_key=f"{taken.offer_id}:waitlist_closed",
    )
    assert gone["touch"] == "waitlist_closed"
    sms = rig.double.messages[-1]
    assert sms.to == "+15552010001"
    assert sms.body == (
        "Bayview Family Practice: the Wed Mar 5 at 12:30 PM opening is no longer available. "
        "You are still on our waitlist. "
        f"Details: {rig.runtime.state['links'].url(gone['id'])} "
        "Reply STOP to opt out, HELP for help."
    )
    assert not any(p.casefold() in sms.body.casefold() for p in PHI)
    # The expired offer's patient and the late answer got nothing more.
    await publish(rig.settings, offer_closed(rig, expired, "answered_late"))
    (late,) = await rig.wait_rows(
        lambda rs: bool(rs) and rs[0]["status"] == "sent",
        touch_key=f"{expired.offer_id}:waitlist_closed",
    )
    assert late["patient_id"] == expired_patient
    assert len(rig.double.messages) == 4
    assert len(await rig.rows(patient_id=taken_patient)) == 2


@pytest.mark.service
async def test_an_offer_closed_before_it_went_out_is_never_sent(rig: Rig) -> None:
    patient = new_id("pat")
    offered = slot_offered(rig, patient, new_id("offer"))
    # The offer's message as the consumer writes it, then held back by a retry an hour
    # away (a throttled provider): still queued when the offer closes.
    async with rig.runtime.sessionmaker() as session, session.begin():
        messages = Messages(session)
        now = rig.runtime.clock.now()
        message_id = new_id("msg")
        await messages.add(
            NewMessage(
                id=message_id,
                org_id=rig.org_id,
                patient_id=patient,
                appointment_id=None,
                location_id=offered.location_id,
                touch_key=f"{offered.offer_id}:waitlist_offer",
                touch="waitlist_offer",
                language="en",
                practice_name=offered.practice_name,
                sensitive_location=False,
                start_at=offered.start_at,
                time_zone=offered.location_time_zone,
                status=MessageStatus.QUEUED,
                channel=Channel.SMS,
                offer_expires_at=offered.expires_at,
            ),
            now=now,
        )
        await messages.schedule_retry(
            message_id, attempts=1, at=now + timedelta(hours=1), error="Twilio HTTP 429", now=now
        )

    await publish(rig.settings, offer_closed(rig, offered, "taken"))

    (row,) = await rig.wait_rows(lambda rs: bool(rs) and rs[0]["status"] == "failed", id=message_id)
    assert row["last_error"] == "offer closed before sending (taken)"
    failed = await rig.wait_events(
        lambda es: any(e["type"] == "careloop.messaging.message.failed.v1" for e in es)
    )
    assert [e["message_id"] for e in failed if e["type"].endswith("failed.v1")] == [message_id]
    # No "gone" message about an offer the patient never saw.
    assert await rig.rows(touch_key=f"{offered.offer_id}:waitlist_closed") == []
    assert rig.double.messages == []
