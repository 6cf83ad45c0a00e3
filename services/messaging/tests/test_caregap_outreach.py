"""Care-gap outreach: each `OutreachRequested` step becomes at most one check-up message,
through the same path as a referral contact (preferences, opt-outs, the contact budget,
the neutral sender, the secure link). Unit tests for the rules and templates; service
tests against real PostgreSQL, Kafka and OpenBao through the rig of `test_service.py`
(Twilio double, local SMTP server, patients faked at its port). Names, numbers and ids
are synthetic."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from careloop_contracts import OutreachRequested
from careloop_messaging.domain.defaults import BUILT_IN_TEMPLATES
from careloop_messaging.domain.outreach import (
    CAREGAP_OUTREACH_TOUCH,
    UNSOLICITED_EXEMPT_TOUCHES,
    ContactData,
    Recipient,
    decide,
    message_kind,
)
from careloop_messaging.domain.templates import (
    Channel,
    MessageKind,
    SenderProfile,
    TemplateKey,
    TemplateRenderer,
)
from careloop_messaging.store.repository import OptOuts, RecipientCipher
from careloop_messaging.testing.rig import email_texts, publish

from .test_links import JSON, LINK
from .test_service import E164, Rig, new_id, sms_patient
from .test_service import mail as mail
from .test_service import rig as rig

SENT = "careloop.messaging.message.sent.v1"
SKIPPED = "careloop.messaging.message.skipped.v1"
CLINICAL_WORDS = (
    "gap",
    "measure",
    "diabetes",
    "a1c",
    "screening",
    "mammogram",
    "colonoscopy",
    "cancer",
    "blood",
    "behavioral",
    "vaccine",
)
"""Words no outreach text may carry: a measure, a test or a condition."""


def no_clinical_word(text: str) -> bool:
    folded = text.casefold()
    return not any(word in folded for word in CLINICAL_WORDS)


# --- unit -------------------------------------------------------------------------


def _contact(**changes: Any) -> ContactData:
    values: dict[str, Any] = {
        "phones": ["(555) 201-3344"],
        "emails": ["pat@example.org"],
        "allowed_channels": [Channel.SMS, Channel.EMAIL],
        "preferred_channel": Channel.SMS,
        "allow_automated_messages": True,
        "patient_id": "pat-1",
    }
    values.update(changes)
    return ContactData(**values)


def _decide(
    contact: ContactData, requested: Channel | None, opted: set[Recipient] | None = None
) -> Recipient | None:
    return decide(
        contact,
        opted_out=lambda r: r in (opted or set()),
        sent_this_week=0,
        budget_per_week=3,
        default_country_code="1",
        requested=requested,
    ).recipient


@pytest.mark.unit
def test_a_requested_channel_wins_only_where_the_patient_allows_it() -> None:
    email = Recipient(Channel.EMAIL, "pat@example.org")
    sms = Recipient(Channel.SMS, E164)
    assert _decide(_contact(), Channel.EMAIL) == email
    assert _decide(_contact(), None) == sms  # the preferred one
    # Not allowed (the portal), or opted out of: the usual order, as if never asked.
    assert _decide(_contact(), Channel.PORTAL) == sms
    assert _decide(_contact(), Channel.EMAIL, opted={email}) == sms
    assert _decide(_contact(allowed_channels=[Channel.SMS]), Channel.EMAIL) == sms


@pytest.mark.unit
def test_outreach_is_a_checkup_message_inside_the_contact_budget() -> None:
    assert message_kind(CAREGAP_OUTREACH_TOUCH) is MessageKind.CHECKUP
    assert CAREGAP_OUTREACH_TOUCH not in UNSOLICITED_EXEMPT_TOUCHES


@pytest.mark.unit
@pytest.mark.parametrize("channel", list(Channel))
@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("sensitive", [False, True])
def test_checkup_templates_pass_the_phi_check_and_name_no_measure(
    channel: Channel, language: str, sensitive: bool
) -> None:
    template = BUILT_IN_TEMPLATES[TemplateKey(MessageKind.CHECKUP, channel, language)]
    renderer = TemplateRenderer()
    renderer.check(template, sensitive=True)  # the strictest rules
    sender = SenderProfile("Bayview Family Practice", sensitive=sensitive)
    link = "https://portal.example.test/m/" + "x" * 40
    rendered = renderer.render(template, {"secure_link": link}, sender=sender)
    texts = [rendered.body, rendered.subject or "", rendered.html_body or ""]
    assert link in rendered.body
    assert all(no_clinical_word(text) for text in texts)
    assert ("Bayview" in " ".join(texts)) is (not sensitive)
    if channel is Channel.SMS:
        assert len(rendered.body) <= 320
        assert "STOP" in rendered.body


# --- service ----------------------------------------------------------------------


def outreach(rig: Rig, patient: str, **changes: Any) -> OutreachRequested:
    campaign = changes.pop("campaign_id", new_id("campaign"))
    step = changes.pop("step", 1)
    values: dict[str, Any] = {
        "outreach_key": f"{campaign}:{patient}:{step}",
        "campaign_id": campaign,
        "patient_id": patient,
        "org_id": rig.org_id,
        "location_id": "loc-north",
        "step": step,
        "channel": None,
        "practice_name": "Bayview Family Practice",
        "sensitive_location": False,
        "location_time_zone": "America/New_York",
        "respond_by": datetime.now(UTC) + timedelta(days=7),
        "occurred_at": datetime.now(UTC),
    }
    values.update(changes)
    return OutreachRequested(**values)


async def sent_row(rig: Rig, event: OutreachRequested) -> dict[str, Any]:
    (row,) = await rig.wait_rows(
        lambda rs: bool(rs) and rs[0]["status"] in {"sent", "skipped"},
        touch_key=event.outreach_key,
    )
    return row


@pytest.mark.service
async def test_a_step_becomes_one_checkup_sms_however_often_it_arrives(rig: Rig) -> None:
    patient = new_id("pat")
    rig.contacts.patients[patient] = sms_patient()
    step = outreach(rig, patient)

    (event_id,) = await publish(rig.settings, step)
    row = await sent_row(rig, step)
    # Redelivered (same event id), then replayed under a new event id: nothing more.
    await publish(rig.settings, step, event_id=event_id)
    await publish(rig.settings, step)
    await rig.wait_events(lambda es: [e["type"] for e in es] == [SENT])
    await asyncio.sleep(1.0)

    assert (row["status"], row["touch"], row["channel"]) == ("sent", "caregap_outreach", "sms")
    assert row["appointment_id"] is None
    (sms,) = rig.double.messages
    assert sms.to == E164
    assert sms.body == (
        "Bayview Family Practice: it's time for a check-up. Call us to book a visit; "
        f"details: {rig.runtime.state['links'].url(row['id'])} "
        "Reply STOP to opt out, HELP for help."
    )
    assert no_clinical_word(sms.body)
    assert len(await rig.rows(patient_id=patient)) == 1
    (sent,) = await rig.events()
    assert (sent["message_id"], sent["touch_key"]) == (row["id"], step.outreach_key)
    assert E164 not in json.dumps(sent)

    # The campaign's next step is a message of its own.
    second = outreach(rig, patient, campaign_id=step.campaign_id, step=2)
    await publish(rig.settings, second)
    assert (await sent_row(rig, second))["status"] == "sent"
    assert len(rig.double.messages) == 2


@pytest.mark.service
async def test_a_sensitive_location_gets_the_neutral_sender_and_no_practice_name(
    rig: Rig,
) -> None:
    patient = new_id("pat")
    rig.contacts.patients[patient] = sms_patient()
    step = outreach(rig, patient, practice_name="Harbor Behavioral Health", sensitive_location=True)
    await publish(rig.settings, step)
    row = await sent_row(rig, step)
    (sms,) = rig.double.messages
    assert sms.body.startswith("Your care team: it's time for a check-up.")
    assert "Harbor" not in sms.body
    assert no_clinical_word(sms.body)

    # The link's page says the same and no more, and takes no action.
    token = LINK.search(sms.body)
    assert token, sms.body
    page = await rig.http.get(f"/links/{token.group(1)}", headers=JSON)
    assert page.status_code == 200, page.text
    view = page.json()
    assert (view["kind"], view["state"], view["actions"]) == ("checkup", "ready_to_book", [])
    assert view["practice_name"] == "Your care team"
    assert view["appointment_date"] is None
    html = await rig.http.get(f"/links/{token.group(1)}", headers={"Accept": "text/html"})
    # The page's words, not its style sheet (CSS has a `gap` property).
    main = html.text.split("<main", 1)[1].split("</main>", 1)[0]
    assert "time for a check-up" in main
    assert "Harbor" not in html.text
    assert no_clinical_word(main)
    acted = await rig.http.post(
        f"/links/{token.group(1)}", json={"action": "call_me"}, headers=JSON
    )
    assert acted.status_code == 422
    assert acted.headers["content-type"].startswith("application/problem+json")
    assert row["sensitive_location"] is True


@pytest.mark.service
async def test_the_steps_channel_is_used_when_allowed_else_the_usual_fallback(rig: Rig) -> None:
    by_email, not_allowed = new_id("pat"), new_id("pat")
    rig.contacts.patients[by_email] = sms_patient()
    rig.contacts.patients[not_allowed] = sms_patient(phones=["(555) 201-0002"])
    email_step = outreach(rig, by_email, channel="email")
    portal_step = outreach(rig, not_allowed, channel="portal")
    await publish(rig.settings, email_step, portal_step)

    mailed = await sent_row(rig, email_step)
    texted = await sent_row(rig, portal_step)
    assert (mailed["status"], mailed["channel"]) == ("sent", "email")
    # The portal is not among the patient's allowed channels: their preferred one.
    assert (texted["status"], texted["channel"]) == ("sent", "sms")
    (email,) = rig.mail.messages
    assert email["To"] == "pat@example.org"
    assert email["Subject"] == "Time for a check-up - Bayview Family Practice"
    assert all(no_clinical_word(text) for text in email_texts(email))
    (sms,) = rig.double.messages
    assert sms.to == "+15552010002"


@pytest.mark.service
async def test_an_opted_out_patient_is_skipped_with_the_reason(rig: Rig) -> None:
    patient = new_id("pat")
    rig.contacts.patients[patient] = sms_patient(allowed_channels=[Channel.SMS])
    cipher: RecipientCipher = rig.runtime.state["cipher"]
    async with rig.runtime.sessionmaker() as session, session.begin():
        index = cipher.index(rig.org_id, Recipient(Channel.SMS, E164))
        await OptOuts(session).add(rig.org_id, Channel.SMS, index, rig.runtime.clock.now())
    step = outreach(rig, patient, channel="sms")

    (event_id,) = await publish(rig.settings, step)
    await publish(rig.settings, step, event_id=event_id)
    row = await sent_row(rig, step)

    assert (row["status"], row["skip_reason"]) == ("skipped", "opted_out")
    await rig.wait_events(lambda es: len(es) >= 1)
    await asyncio.sleep(1.0)
    (skipped,) = await rig.events()
    assert (skipped["type"], skipped["reason"], skipped["touch_key"]) == (
        SKIPPED,
        "opted_out",
        step.outreach_key,
    )
    assert rig.double.messages == []
