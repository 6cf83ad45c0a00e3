"""Secure one-time links against real PostgreSQL, Kafka and OpenBao: each test sends a
real message through the pipeline (Twilio double), takes the link from the SMS body as
the patient would, and opens it over HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from careloop_contracts import WaitlistSlotOffered
from careloop_kit.testing.apps import running_app
from careloop_messaging.app import create_app
from careloop_messaging.domain.outreach import local_date_and_time
from careloop_messaging.store.repository import SecureLinks
from careloop_messaging.store.tables import message, platform
from careloop_messaging.testing.rig import publish, reminder_due, reschedule_offered

from .test_service import E164, PHONE, Rig, new_id, sms_patient
from .test_service import mail as mail
from .test_service import rig as rig
from .test_waitlist_messages import offer_closed, slot_offered

pytestmark = pytest.mark.service

REPLY_V2 = "careloop.messaging.reply.received.v2"
REPLY_V1 = "careloop.messaging.reply.received.v1"
AUDIT = "careloop.audit.access.recorded.v1"
LINK = re.compile(r"https://portal\.example\.test/m/([A-Za-z0-9_-]+)")
JSON = {"Accept": "application/json"}


async def send_reminder(
    rig: Rig,
    *,
    touch: str = "1_day_before",
    start_at: datetime | None = None,
    sensitive: bool = False,
    **ids: str,
) -> tuple[dict[str, Any], str]:
    """A reminder through the pipeline: (its sent row, the token in the SMS)."""
    patient = ids.get("patient") or new_id("pat")
    appointment = ids.get("appointment") or new_id("appt")
    rig.contacts.patients[patient] = sms_patient()
    await publish(
        rig.settings,
        reminder_due(
            org_id=rig.org_id,
            patient_id=patient,
            appointment_id=appointment,
            touch=touch,
            start_at=start_at,
            sensitive_location=sensitive,
            practice_name="Harbor Behavioral Health" if sensitive else "Bayview Family Practice",
        ),
    )
    (row,) = await rig.wait_rows(
        lambda rs: bool(rs) and rs[0]["status"] == "sent", touch_key=f"{appointment}:{touch}"
    )
    return row, token_in(rig, row)


def token_in(rig: Rig, row: dict[str, Any]) -> str:
    """The token of the SMS sent for `row`, read from its body at the Twilio double."""
    (sms,) = [m for m in rig.double.messages if m.sid == row["provider_id"]]
    found = LINK.search(sms.body)
    assert found, sms.body
    return found.group(1)


async def send_offer(rig: Rig, **changes: Any) -> tuple[dict[str, Any], str]:
    patient, appointment, offer_id = new_id("pat"), new_id("appt"), new_id("offer")
    rig.contacts.patients[patient] = sms_patient()
    await publish(
        rig.settings,
        reschedule_offered(
            org_id=rig.org_id,
            patient_id=patient,
            appointment_id=appointment,
            offer_id=offer_id,
            **changes,
        ),
    )
    (row,) = await rig.wait_rows(
        lambda rs: bool(rs) and rs[0]["status"] == "sent", touch_key=f"{offer_id}:offer"
    )
    return row, token_in(rig, row)


async def staged(rig: Rig, event_type: str) -> list[dict[str, Any]]:
    """Events of a type messaging wrote to its outbox, oldest first."""
    outbox = platform.outbox
    async with rig.runtime.sessionmaker() as session:
        rows = await session.scalars(
            select(outbox.c.payload).where(outbox.c.event_type == event_type).order_by(outbox.c.id)
        )
        return [json.loads(bytes(p)) for p in rows]


async def row_of(rig: Rig, message_id: str) -> dict[str, Any]:
    rows = await rig.rows(id=message_id)
    assert len(rows) == 1
    return rows[0]


def assert_no_contact_data(text: str, row: dict[str, Any]) -> None:
    for secret in (PHONE, E164, "pat@example.org", row["patient_id"], row["id"]):
        assert secret not in text, f"{secret!r} on the page"


async def test_the_link_names_the_message_and_nothing_usable_is_stored(rig: Rig) -> None:
    row, token = await send_reminder(rig)

    links: SecureLinks = rig.runtime.state["links"]
    assert links.message_id(token) == row["id"]
    assert len(token) == 39
    # No column holds the token (or any bearer secret): the link is derived.
    assert "link_token" not in row
    assert all(token not in repr(value) for value in row.values())
    # A different key opens nothing: the token is bound to the Vault key.
    assert SecureLinks(b"k" * 32, "https://x").message_id(token) is None


async def test_the_page_shows_the_visit_and_the_actions_and_never_acts(rig: Rig) -> None:
    row, token = await send_reminder(rig)

    page = await rig.http.get(f"/links/{token}")
    again = await rig.http.get(f"/links/{token}", headers={"Accept": "text/html"})
    as_json = await rig.http.get(f"/links/{token}", headers=JSON)

    assert page.status_code == again.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    html = page.text
    assert '<html lang="en">' in html
    assert "Bayview Family Practice" in html
    # 14:30 UTC on 4 March 2031 is 9:30 in New York.
    assert "Tue Mar 4" in html
    assert "9:30 AM" in html
    for action in ("confirm", "reschedule", "cancel"):
        assert f'name="action" value="{action}"' in html
    assert_no_contact_data(html, row)
    assert as_json.json() == {
        "kind": "appointment",
        "practice_name": "Bayview Family Practice",
        "appointment_date": "Tue Mar 4",
        "appointment_time": "9:30 AM",
        "offer_expires_date": None,
        "offer_expires_time": None,
        "state": "scheduled",
        "actions": ["confirm", "reschedule", "cancel"],
        "options": [],
        "done": None,
        "next_step": None,
    }
    # Reading the page three times acted on nothing, but each read is in the trail.
    assert (await row_of(rig, row["id"]))["link_used_at"] is None
    assert await staged(rig, REPLY_V2) == []
    reads = [
        a
        for a in await staged(rig, AUDIT)
        if a["resource_id"] == row["id"] and a["action"] == "read"
    ]
    assert len(reads) == 3
    assert {(a["actor_type"], a["actor_id"], a["org_id"]) for a in reads} == {
        ("patient", row["patient_id"], rig.org_id)
    }


async def test_confirm_acts_once_and_a_second_post_says_what_was_done(rig: Rig) -> None:
    row, token = await send_reminder(rig)

    confirmed = await rig.http.post(f"/links/{token}", data={"action": "confirm"})
    second = await rig.http.post(f"/links/{token}", json={"action": "cancel"}, headers=JSON)
    second_form = await rig.http.post(f"/links/{token}", data={"action": "confirm"})
    after = await rig.http.get(f"/links/{token}", headers=JSON)

    assert confirmed.status_code == 200, confirmed.text
    assert "your appointment is confirmed" in confirmed.text
    assert 'name="action"' not in confirmed.text
    assert_no_contact_data(confirmed.text, row)
    assert second.status_code == 409
    assert second.headers["content-type"] == "application/problem+json"
    problem = second.json()
    assert problem["type"].endswith("/link-used")
    assert problem["done"]["action"] == "confirm"
    assert token not in second.text  # the instance names the route, not the token
    assert second_form.status_code == 409
    assert "already used" in second_form.text
    assert after.status_code == 200
    assert (after.json()["state"], after.json()["actions"]) == ("confirmed", [])
    assert after.json()["done"]["action"] == "confirm"

    stored = await row_of(rig, row["id"])
    assert (stored["link_action"], stored["link_choice"]) == ("confirm", None)
    assert stored["link_used_at"] is not None
    (reply,) = await staged(rig, REPLY_V2)
    assert {k: reply[k] for k in ("org_id", "patient_id", "appointment_id", "message_id")} == {
        "org_id": rig.org_id,
        "patient_id": row["patient_id"],
        "appointment_id": row["appointment_id"],
        "message_id": row["id"],
    }
    assert (reply["intent"], reply["via"], reply["choice"]) == ("confirm", "link", None)
    uuid.UUID(reply["reply_id"])
    assert await staged(rig, REPLY_V1) == []
    (created,) = [a for a in await staged(rig, AUDIT) if a["resource_id"] == reply["reply_id"]]
    assert (created["actor_type"], created["actor_id"]) == ("patient", row["patient_id"])
    assert (created["action"], created["resource_type"]) == ("create", "Communication")
    assert created["outcome_detail"] == "confirm by secure link"
    # The event reaches the topic (scheduling's consumer reads it there).
    events = await rig.wait_events(lambda es: any(e["type"] == REPLY_V2 for e in es))
    assert [e["reply_id"] for e in events if e["type"] == REPLY_V2] == [reply["reply_id"]]


async def test_a_cancel_closes_every_link_of_the_appointment(rig: Rig) -> None:
    appointment, patient = new_id("appt"), new_id("pat")
    first, token = await send_reminder(rig, appointment=appointment, patient=patient)
    second, other_token = await send_reminder(
        rig, appointment=appointment, patient=patient, touch="3_days_before"
    )

    cancelled = await rig.http.post(f"/links/{token}", json={"action": "cancel"}, headers=JSON)
    late = await rig.http.post(f"/links/{other_token}", json={"action": "confirm"}, headers=JSON)
    page = await rig.http.get(f"/links/{other_token}", headers=JSON)

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    assert "cancellation has been sent" in cancelled.json()["next_step"]
    assert late.status_code == 409
    assert late.json()["type"].endswith("/appointment-closed")
    assert (page.json()["state"], page.json()["actions"]) == ("cancelled", [])
    (reply,) = await staged(rig, REPLY_V2)
    assert (reply["intent"], reply["message_id"]) == ("cancel", first["id"])
    assert (await row_of(rig, second["id"]))["link_used_at"] is None


async def test_reschedule_says_what_happens_next(rig: Rig) -> None:
    _, token = await send_reminder(rig)

    asked = await rig.http.post(f"/links/{token}", data={"action": "reschedule"})

    assert asked.status_code == 200
    assert "We will send you a few open times shortly" in asked.text
    (reply,) = await staged(rig, REPLY_V2)
    assert reply["intent"] == "reschedule"


async def test_an_offer_link_lists_the_times_and_chooses_one(rig: Rig) -> None:
    row, token = await send_offer(rig)

    page = await rig.http.get(f"/links/{token}")
    listed = await rig.http.get(f"/links/{token}", headers=JSON)
    refused = [
        await rig.http.post(f"/links/{token}", json=body, headers=JSON)
        for body in (
            {"action": "choose", "choice": 4},
            {"action": "choose"},
            {"action": "confirm"},
            {"action": "delete"},
        )
    ]
    chosen = await rig.http.post(f"/links/{token}", data={"action": "choose", "choice": "2"})

    assert page.status_code == 200
    for choice in (1, 2, 3):
        assert f'name="choice" value="{choice}"' in page.text
    # 14:00, 19:30 and 13:15 UTC in early March are 9:00, 14:30 and 8:15 in New York.
    assert listed.json()["options"] == [
        {"choice": 1, "date": "Wed Mar 5", "time": "9:00 AM"},
        {"choice": 2, "date": "Thu Mar 6", "time": "2:30 PM"},
        {"choice": 3, "date": "Fri Mar 7", "time": "8:15 AM"},
    ]
    assert listed.json()["actions"] == ["choose", "cancel"]
    # The row's visit time is option 1, not the visit's: the page does not show it as such.
    assert (listed.json()["appointment_date"], listed.json()["appointment_time"]) == (None, None)
    assert [r.status_code for r in refused] == [422, 422, 422, 422]
    assert all(r.headers["content-type"] == "application/problem+json" for r in refused)
    assert chosen.status_code == 200, chosen.text
    assert "You chose Thu Mar 6 at 2:30 PM" in chosen.text
    (reply,) = await staged(rig, REPLY_V2)
    assert (reply["intent"], reply["choice"], reply["appointment_id"]) == (
        "choose",
        2,
        row["appointment_id"],
    )


async def test_expired_links_answer_410(rig: Rig) -> None:
    past = datetime.now(UTC) - timedelta(hours=1)
    started, token = await send_reminder(rig, start_at=past)
    offer, offer_token = await send_offer(rig)
    # The offer lapses after it was sent.
    async with rig.runtime.sessionmaker() as session, session.begin():
        await session.execute(
            update(message).where(message.c.id == offer["id"]).values(offer_expires_at=past)
        )

    answers = [
        await rig.http.get(f"/links/{token}"),
        await rig.http.get(f"/links/{token}", headers=JSON),
        await rig.http.post(f"/links/{token}", json={"action": "confirm"}, headers=JSON),
        await rig.http.get(f"/links/{offer_token}", headers=JSON),
        await rig.http.post(f"/links/{offer_token}", data={"action": "choose", "choice": "1"}),
    ]

    assert [a.status_code for a in answers] == [410] * 5
    assert "This link has expired" in answers[0].text
    assert answers[1].json()["type"].endswith("/link-expired")
    assert await staged(rig, REPLY_V2) == []
    assert (await row_of(rig, started["id"]))["link_used_at"] is None


async def test_forged_unknown_and_malformed_tokens_get_the_same_404(rig: Rig) -> None:
    row, token = await send_reminder(rig)
    links: SecureLinks = rig.runtime.state["links"]
    # Change a character well inside the MAC: the last one may carry only padding bits,
    # and a change there can decode to the very same bytes (a valid token).
    at = len(token) - 4
    flipped = token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]
    candidates = {
        "forged": flipped,
        "unknown": links.token(str(uuid.uuid4())),
        "text id": links.token("no-such-message"),
        "malformed": "not-a-token",
        "padded": token + "==",
        "another key": SecureLinks(b"k" * 32, "https://x").token(row["id"]),
    }

    as_json = {n: await rig.http.get(f"/links/{t}", headers=JSON) for n, t in candidates.items()}
    as_html = {n: await rig.http.get(f"/links/{t}") for n, t in candidates.items()}
    posted = {
        n: await rig.http.post(f"/links/{t}", json={"action": "confirm"}, headers=JSON)
        for n, t in candidates.items()
    }

    for answers in (as_json, as_html, posted):
        assert {r.status_code for r in answers.values()} == {404}
        # Byte for byte the same answer: nothing tells a forged token from an unknown one.
        assert len({r.content for r in answers.values()}) == 1, answers
    assert as_json["forged"].json()["type"].endswith("/link-not-found")
    assert await staged(rig, REPLY_V2) == []
    assert (await row_of(rig, row["id"]))["link_used_at"] is None


async def test_bad_bodies_are_problems_and_spend_nothing(rig: Rig) -> None:
    row, token = await send_reminder(rig)

    too_big = await rig.http.post(
        f"/links/{token}", content=b"action=confirm&x=" + b"a" * 5000, headers=JSON
    )
    not_json = await rig.http.post(
        f"/links/{token}",
        content=b"{nope",
        headers={**JSON, "Content-Type": "application/json"},
    )
    xml = await rig.http.post(
        f"/links/{token}",
        content=b"<action>confirm</action>",
        headers={**JSON, "Content-Type": "application/xml"},
    )

    assert [r.status_code for r in (too_big, not_json, xml)] == [413, 422, 415]
    assert all(
        r.headers["content-type"] == "application/problem+json" for r in (too_big, not_json, xml)
    )
    assert (await row_of(rig, row["id"]))["link_used_at"] is None
    # The link still works.
    ok = await rig.http.post(f"/links/{token}", json={"action": "confirm"}, headers=JSON)
    assert ok.status_code == 200


async def test_two_taps_at_once_act_once(rig: Rig) -> None:
    _, token = await send_reminder(rig)

    async with httpx.AsyncClient(base_url=rig.url) as other:
        answers = await asyncio.gather(
            rig.http.post(f"/links/{token}", json={"action": "confirm"}, headers=JSON),
            other.post(f"/links/{token}", json={"action": "cancel"}, headers=JSON),
        )

    assert sorted(a.status_code for a in answers) == [200, 409]
    assert len(await staged(rig, REPLY_V2)) == 1


async def test_a_sensitive_location_shows_the_neutral_name(rig: Rig) -> None:
    row, token = await send_reminder(rig, sensitive=True)

    page = await rig.http.get(f"/links/{token}")
    as_json = await rig.http.get(f"/links/{token}", headers=JSON)

    assert page.status_code == 200
    assert "Behavioral" not in page.text
    assert "Harbor" not in page.text
    assert "Your care team" in page.text
    assert as_json.json()["practice_name"] == "Your care team"
    assert_no_contact_data(page.text, row)


async def test_the_service_refuses_to_start_without_its_link_key(rig: Rig) -> None:
    settings = rig.settings.model_copy(
        update={"link_key_secret_path": f"careloop/messaging/link-key-missing-{uuid.uuid4()}"}
    )
    app = create_app(settings, contacts=rig.contacts)

    with pytest.raises(Exception, match="link-key-missing"):
        async with running_app(app):
            pass


# --- waitlist messages --------------------------------------------------------------


async def send_waitlist_offer(
    rig: Rig, **changes: Any
) -> tuple[WaitlistSlotOffered, dict[str, Any], str]:
    """A waitlist offer through the pipeline: (the event, its sent row, the token in the SMS)."""
    patient = new_id("pat")
    rig.contacts.patients[patient] = sms_patient()
    offered = slot_offered(rig, patient, new_id("offer"), **changes)
    await publish(rig.settings, offered)
    (row,) = await rig.wait_rows(
        lambda rs: bool(rs) and rs[0]["status"] == "sent",
        touch_key=f"{offered.offer_id}:waitlist_offer",
    )
    return offered, row, token_in(rig, row)


async def test_a_waitlist_offer_link_shows_the_time_and_takes_it_once(rig: Rig) -> None:
    offered, row, token = await send_waitlist_offer(rig)
    expires_day, expires_time = local_date_and_time(offered.expires_at, "America/New_York", "en")

    page = await rig.http.get(f"/links/{token}")
    as_json = await rig.http.get(f"/links/{token}", headers=JSON)
    taken = await rig.http.post(f"/links/{token}", data={"action": "accept"})
    second = await rig.http.post(f"/links/{token}", json={"action": "accept"}, headers=JSON)
    after = await rig.http.get(f"/links/{token}", headers=JSON)

    assert page.status_code == 200, page.text
    assert "Bayview Family Practice" in page.text
    # 17:30 UTC on 5 March 2031 is 12:30 in New York.
    assert "Wed Mar 5" in page.text
    assert "12:30 PM" in page.text
    assert f"until {expires_day} at {expires_time}" in page.text
    assert "Take this time" in page.text
    assert re.findall(r'name="action" value="(\w+)"', page.text) == ["accept"]
    assert_no_contact_data(page.text, row)
    assert offered.offer_id not in page.text
    assert as_json.json() == {
        "kind": "waitlist_offer",
        "practice_name": "Bayview Family Practice",
        "appointment_date": "Wed Mar 5",
        "appointment_time": "12:30 PM",
        "offer_expires_date": expires_day,
        "offer_expires_time": expires_time,
        "state": "offered",
        "actions": ["accept"],
        "options": [],
        "done": None,
        "next_step": None,
    }

    assert taken.status_code == 200, taken.text
    assert "a confirmation text will follow" in taken.text
    assert "If the time is still free" in taken.text
    assert 'name="action"' not in taken.text
    assert_no_contact_data(taken.text, row)
    assert second.status_code == 409
    assert second.json()["type"].endswith("/link-used")
    assert second.json()["done"]["action"] == "accept"
    assert (after.json()["state"], after.json()["actions"]) == ("accept_requested", [])

    stored = await row_of(rig, row["id"])
    assert (stored["link_action"], stored["link_choice"]) == ("accept", None)
    (reply,) = await staged(rig, REPLY_V2)
    assert {
        k: reply[k]
        for k in ("org_id", "patient_id", "message_id", "appointment_id", "offer_id", "choice")
    } == {
        "org_id": rig.org_id,
        "patient_id": offered.patient_id,
        "message_id": row["id"],
        "appointment_id": None,
        "offer_id": offered.offer_id,
        "choice": None,
    }
    assert (reply["intent"], reply["via"]) == ("accept", "link")
    assert E164 not in json.dumps(reply)
    # Views and the action are audited as the patient's, with string resource ids.
    audits = await staged(rig, AUDIT)
    reads = [a for a in audits if a["resource_id"] == row["id"] and a["action"] == "read"]
    (created,) = [a for a in audits if a["resource_id"] == reply["reply_id"]]
    assert len(reads) == 3
    for entry in (*reads, created):
        assert (entry["actor_type"], entry["actor_id"]) == ("patient", offered.patient_id)
        assert entry["patient_id"] == offered.patient_id
        assert isinstance(entry["resource_id"], str)
    assert (created["action"], created["outcome_detail"]) == ("create", "accept by secure link")
    events = await rig.wait_events(lambda es: any(e["type"] == REPLY_V2 for e in es))
    (published,) = [e for e in events if e["type"] == REPLY_V2]
    assert (published["offer_id"], published["via"]) == (offered.offer_id, "link")


async def test_a_waitlist_offer_link_refuses_every_other_action(rig: Rig) -> None:
    _, row, token = await send_waitlist_offer(rig)
    _, reminder_token = await send_reminder(rig)

    refused = [
        await rig.http.post(f"/links/{token}", json=body, headers=JSON)
        for body in (
            {"action": "confirm"},
            {"action": "cancel"},
            {"action": "reschedule"},
            {"action": "choose", "choice": 1},
        )
    ]
    accept_on_a_reminder = await rig.http.post(
        f"/links/{reminder_token}", json={"action": "accept"}, headers=JSON
    )

    assert [r.status_code for r in refused] == [422] * 4
    assert all(r.headers["content-type"] == "application/problem+json" for r in refused)
    assert refused[0].json()["detail"] == "This link can: accept."
    assert accept_on_a_reminder.status_code == 422
    assert await staged(rig, REPLY_V2) == []
    assert (await row_of(rig, row["id"]))["link_used_at"] is None


async def test_a_waitlist_offer_link_expires_with_the_offer_or_the_time(rig: Rig) -> None:
    past = datetime.now(UTC) - timedelta(minutes=5)
    lapsed, lapsed_row, lapsed_token = await send_waitlist_offer(rig)
    started, started_row, started_token = await send_waitlist_offer(rig)
    async with rig.runtime.sessionmaker() as session, session.begin():
        # One offer lapsed after it was sent; the other's time started while its offer
        # still ran (an expiry is never meant to pass the start, but the start wins).
        await session.execute(
            update(message).where(message.c.id == lapsed_row["id"]).values(offer_expires_at=past)
        )
        await session.execute(
            update(message).where(message.c.id == started_row["id"]).values(start_at=past)
        )

    answers = [
        await rig.http.get(f"/links/{lapsed_token}"),
        await rig.http.get(f"/links/{lapsed_token}", headers=JSON),
        await rig.http.post(f"/links/{lapsed_token}", data={"action": "accept"}),
        await rig.http.get(f"/links/{started_token}", headers=JSON),
        await rig.http.post(f"/links/{started_token}", json={"action": "accept"}, headers=JSON),
    ]

    assert [a.status_code for a in answers] == [410] * 5
    assert "the offered time can no longer be taken" in answers[0].text
    assert answers[1].json()["type"].endswith("/link-expired")
    assert await staged(rig, REPLY_V2) == []
    assert (await row_of(rig, lapsed_row["id"]))["link_used_at"] is None
    assert lapsed.offer_id != started.offer_id


async def test_a_closed_offer_links_say_the_time_is_gone_and_do_nothing(rig: Rig) -> None:
    offered, offer_row, offer_token = await send_waitlist_offer(rig)
    await publish(rig.settings, offer_closed(rig, offered, "taken"))
    (gone_row,) = await rig.wait_rows(
        lambda rs: bool(rs) and rs[0]["status"] == "sent",
        touch_key=f"{offered.offer_id}:waitlist_closed",
    )
    gone_token = token_in(rig, gone_row)

    gone_page = await rig.http.get(f"/links/{gone_token}")
    gone_json = await rig.http.get(f"/links/{gone_token}", headers=JSON)
    gone_post = await rig.http.post(f"/links/{gone_token}", json={"action": "accept"}, headers=JSON)
    offer_page = await rig.http.get(f"/links/{offer_token}")
    offer_json = await rig.http.get(f"/links/{offer_token}", headers=JSON)
    offer_post = await rig.http.post(f"/links/{offer_token}", data={"action": "accept"})

    for page in (gone_page, offer_page):
        assert page.status_code == 200, page.text
        assert "This time is no longer available" in page.text
        assert "Wed Mar 5" in page.text
        assert 'name="action"' not in page.text
        # Nothing tells whether another patient took it or the practice withdrew it.
        for word in ("taken", "another patient", "accepted", "booked"):
            assert word not in page.text.lower()
    for view, kind in ((gone_json, "waitlist_closed"), (offer_json, "waitlist_offer")):
        body = view.json()
        assert (body["kind"], body["state"], body["actions"], body["done"]) == (
            kind,
            "unavailable",
            [],
            None,
        )
    assert gone_json.json()["offer_expires_date"] is None
    assert gone_post.status_code == 409
    assert gone_post.json()["type"].endswith("/offer-closed")
    assert "no longer available" in gone_post.json()["detail"]
    assert offer_post.status_code == 409
    assert "This time is no longer available" in offer_post.text
    assert await staged(rig, REPLY_V2) == []
    for row in (offer_row, gone_row):
        assert (await row_of(rig, row["id"]))["link_used_at"] is None
    assert_no_contact_data(gone_page.text, gone_row)
