"""The waitlist end to end (issue 4), every service real:

two patients wait for an earlier visit; staff cancel a booked appointment ->
`appointment.cancelled` -> scheduling's waitlist consumer offers the freed time to both
(`waitlist.slot_offered`) -> messaging reads each patient's contact data from patients
and texts them (Twilio double). The first answers `Y` over the signed inbound webhook ->
`reply.received.v2` (accept) -> scheduling books the time for them and closes the other
offer (`waitlist.offer_closed`, taken) -> messaging tells the second patient the time is
gone. No SMS carries a name, birth date, provider or visit type; every step is audited.

The same with the secure link instead of a `Y` (through the gateway, as a phone opens
it): the offer's page shows the time and one button, the tap books it, the other
patient's links say the time is gone, and the booking's confirmation text follows.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from careloop_kit.testing.apps import running_app
from careloop_messaging.channels.sms import SIGNATURE_HEADER, compute_signature
from careloop_messaging.domain.outreach import local_date_and_time

from .practice import PRACTICE_ZONE, open_practice, scheduling_beside
from .test_messaging_reminders import (
    BIRTH_DATE,
    FAMILY,
    GIVEN,
    PHI_MARKERS,
    Chain,
    admin_of_new_org,
    eventually,
    texts_recorded_as_sent,
)
from .test_messaging_reminders import chain as chain
from .test_secure_links import JSON, LINKS, Stack, audit_records_of
from .test_secure_links import stack as stack
from .test_two_way_confirmation import audit_records, eventually_async

pytestmark = pytest.mark.e2e

ZONE = PRACTICE_ZONE
FIRST_PHONE, SECOND_PHONE = "+15550100801", "+15550100802"


async def register(patients: httpx.AsyncClient, admin: dict[str, str], phone: str) -> str:
    """A patient who takes texts, with the synthetic name and birth date the scan
    looks for."""
    created = await patients.post(
        "/patients",
        json={
            "location_id": "loc-north",
            "name": {"family": FAMILY, "given": [GIVEN]},
            "birth_date": BIRTH_DATE,
            "sex": "female",
            "phones": [phone],
            "emails": [f"{uuid.uuid4().hex[:8]}@example.org"],
            "preferred_language": "en",
            "preferences": {"allowed_channels": ["sms"], "preferred_channel": "sms"},
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def reply(chain: Chain, phone: str, body: str) -> None:
    """A patient's SMS, as Twilio posts it to the inbound webhook (signed)."""
    await texts_recorded_as_sent(chain)
    url = f"{chain.messaging.base_url}".rstrip("/") + "/webhooks/twilio/inbound"
    form = {
        "MessageSid": "SM" + secrets.token_hex(16),
        "AccountSid": chain.double.account_sid,
        "From": phone,
        "To": "+15550009999",
        "Body": body,
    }
    signature = compute_signature(chain.double.auth_token, url, form)
    response = await chain.messaging.post(
        "/webhooks/twilio/inbound", data=form, headers={SIGNATURE_HEADER: signature}
    )
    assert response.status_code == 200, response.text


async def test_a_freed_time_goes_to_the_first_patient_who_answers_y(
    chain: Chain, make_database: Callable[[str], Any]
) -> None:
    _org_id, admin = await admin_of_new_org(chain.identity_url)
    leaving = await register(chain.patients, admin, "+15550100800")
    first = await register(chain.patients, admin, FIRST_PHONE)
    second = await register(chain.patients, admin, SECOND_PHONE)
    app, clock = await scheduling_beside(chain, make_database)
    async with running_app(app) as scheduling:
        practice = await open_practice(scheduling, admin, clock.now())
        day = practice.day
        start = practice.at(10)
        booked = await scheduling.post(
            "/appointments",
            json={
                "patient_id": leaving,
                "provider_id": practice.provider_id,
                "appointment_type_id": practice.type_id,
                "location_id": "loc-north",
                "start_at": start.astimezone(UTC).isoformat(),
            },
            headers=admin,
        )
        assert booked.status_code == 201, booked.text
        entries = []
        for patient in (first, second):
            entry = await scheduling.post(
                "/waitlist",
                json={
                    "patient_id": patient,
                    "location_id": "loc-north",
                    "appointment_type_id": practice.type_id,
                    "earliest_date": clock.now().astimezone(ZONE).date().isoformat(),
                    "latest_date": (day + timedelta(days=14)).isoformat(),
                },
                headers=admin,
            )
            assert entry.status_code == 201, entry.text
            entries.append(entry.json())

        cancelled = await scheduling.post(
            f"/appointments/{booked.json()['id']}/cancel", json={}, headers=admin
        )
        assert cancelled.status_code == 200, cancelled.text

        # Both waitlisted patients are offered the time by text.
        await eventually(lambda: len(chain.double.messages) == 2)
        offers = {m.to: m.body for m in chain.double.messages}
        assert set(offers) == {FIRST_PHONE, SECOND_PHONE}
        for body in offers.values():
            assert body.startswith("Bayview Family Practice: an earlier time opened up:")
            assert "10:00 AM" in body
            assert "Reply Y to take it" in body

        await reply(chain, FIRST_PHONE, "Y")

        async def appointments_of(patient: str) -> list[dict[str, Any]]:
            response = await scheduling.get(
                "/appointments", params={"patient_id": patient}, headers=admin
            )
            assert response.status_code == 200, response.text
            items: list[dict[str, Any]] = response.json()["items"]
            return items

        (mine,) = await eventually_async(lambda: appointments_of(first), bool)
        assert (mine["status"], mine["start_at"]) == ("booked", booked.json()["start_at"])
        assert mine["provider_id"] == practice.provider_id

        # The second patient is told the time is gone; nobody else gets a message.
        await eventually(lambda: len(chain.double.messages) == 3)
        gone = chain.double.messages[2]
        assert gone.to == SECOND_PHONE
        assert "opening is no longer available" in gone.body
        assert "10:00 AM" in gone.body
        assert await appointments_of(second) == []
        # A YES from the second patient now answers the "gone" message, not the offer:
        # it keeps its carrier meaning (START, a consent record) and books nothing.
        await reply(chain, SECOND_PHONE, "yes")
        await eventually_async(
            lambda: audit_records(chain, "messaging"),
            lambda records: any(r["resource_type"] == "Consent" for r in records),
        )
        assert await appointments_of(second) == []
        assert len(chain.double.messages) == 3
        scheduling_audit = await audit_records(chain, "scheduling")

        waitlist = await scheduling.get(
            "/waitlist", params={"status": ["booked", "waiting"]}, headers=admin
        )
        statuses = {e["patient_id"]: e["status"] for e in waitlist.json()["items"]}
        assert statuses == {first: "booked", second: "waiting"}

    # The trail: the staff who added the entries and cancelled, the offers made by the
    # waitlist, the booking made for the first patient (the patient as actor), both
    # patients' replies in messaging.
    created = [
        r
        for r in scheduling_audit
        if r["resource_type"] == "WaitlistEntry" and r["action"] == "create"
    ]
    assert {r["patient_id"] for r in created} == {first, second}
    offered = [r for r in scheduling_audit if r["actor_id"] == "scheduling-waitlist"]
    assert {r["patient_id"] for r in offered} == {first, second}
    by_first = [r for r in scheduling_audit if r["actor_id"] == first]
    assert [(r["action"], r["resource_id"]) for r in by_first] == [("create", mine["id"])]
    messaging_audit = await audit_records(chain, "messaging")
    answers = [r for r in messaging_audit if r["resource_type"] == "Communication"]
    assert [r["actor_id"] for r in answers] == [first]

    for message in chain.double.messages:
        for marker in (*PHI_MARKERS, FAMILY, GIVEN, BIRTH_DATE):
            assert marker.lower() not in message.body.lower(), f"{marker!r} leaked"


# The phone of the patient `stack` registers ("+1 555 0100 778"), as messaging texts it.
STACK_PHONE = "+15550100778"


async def test_a_freed_time_taken_by_the_secure_link_through_the_gateway(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.messaging_settings.patients_url) as patients:
        leaving = await register(patients, stack.admin, "+15550100880")
        other = await register(patients, stack.admin, "+15550100881")
    taker = stack.patient_id
    start = datetime.combine(stack.day, datetime.min.time().replace(hour=10), ZONE)
    booked = await stack.scheduling.post(
        "/appointments",
        json={
            "patient_id": leaving,
            "provider_id": stack.provider_id,
            "appointment_type_id": stack.type_id,
            "location_id": "loc-north",
            "start_at": start.astimezone(UTC).isoformat(),
        },
        headers=stack.admin,
    )
    assert booked.status_code == 201, booked.text
    for patient in (taker, other):
        entry = await stack.scheduling.post(
            "/waitlist",
            json={
                "patient_id": patient,
                "location_id": "loc-north",
                "appointment_type_id": stack.type_id,
                "earliest_date": stack.clock.now().astimezone(ZONE).date().isoformat(),
                "latest_date": (stack.day + timedelta(days=14)).isoformat(),
            },
            headers=stack.admin,
        )
        assert entry.status_code == 201, entry.text
    cancelled = await stack.scheduling.post(
        f"/appointments/{booked.json()['id']}/cancel", json={}, headers=stack.admin
    )
    assert cancelled.status_code == 200, cancelled.text

    def token_in(body: str) -> str:
        stack.texts.append(body)
        found = re.search(re.escape(stack.link_base) + r"/([A-Za-z0-9_-]+)", body)
        assert found, body
        return found.group(1)

    async def appointments_of(patient: str) -> list[dict[str, Any]]:
        response = await stack.scheduling.get(
            "/appointments", params={"patient_id": patient}, headers=stack.admin
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    # Both are offered the time; each text carries its own link.
    await eventually(lambda: len(stack.double.messages) == 2)
    offers = {m.to: m.body for m in stack.double.messages}
    assert set(offers) == {STACK_PHONE, "+15550100881"}
    token, other_token = token_in(offers[STACK_PHONE]), token_in(offers["+15550100881"])

    # The taker opens the link: the time, until when, one button; opening books nothing.
    page = await stack.open(token)
    assert page.status_code == 200, page.text
    day, time = local_date_and_time(start, ZONE.key, "en")
    assert "Bayview Family Practice" in page.text
    assert day in page.text
    assert time in page.text
    assert "Take this time" in page.text
    assert re.findall(r'name="action" value="(\w+)"', page.text) == ["accept"]
    listed = (await stack.gateway.get(f"{LINKS}/{token}", headers=JSON)).json()
    assert (listed["state"], listed["actions"]) == ("offered", ["accept"])
    assert f"until {listed['offer_expires_date']} at {listed['offer_expires_time']}" in page.text
    assert await appointments_of(taker) == []

    taken = await stack.gateway.post(f"{LINKS}/{token}", data={"action": "accept"})
    stack.texts.append(taken.text)
    assert taken.status_code == 200, taken.text
    assert "a confirmation text will follow" in taken.text
    (mine,) = await eventually_async(lambda: appointments_of(taker), bool)
    assert (mine["status"], mine["start_at"]) == ("booked", booked.json()["start_at"])
    again = await stack.gateway.post(f"{LINKS}/{token}", json={"action": "accept"}, headers=JSON)
    assert again.status_code == 409
    assert again.json()["done"]["action"] == "accept"

    # The other patient is told the time is gone; neither of their links can take it.
    await eventually(lambda: len(stack.double.messages) == 3)
    gone = stack.double.messages[2]
    assert gone.to == "+15550100881"
    gone_page = await stack.open(token_in(gone.body))
    other_page = await stack.open(other_token)
    for shown in (gone_page, other_page):
        assert shown.status_code == 200, shown.text
        assert "This time is no longer available" in shown.text
        assert 'name="action"' not in shown.text
    late = await stack.gateway.post(
        f"{LINKS}/{other_token}", json={"action": "accept"}, headers=JSON
    )
    assert late.status_code == 409
    assert late.json()["type"].endswith("/offer-closed")
    assert await appointments_of(other) == []

    # What the page promised: the booking's confirmation text reaches the taker.
    await stack.fire_due()
    await eventually(lambda: len(stack.double.messages) == 4)
    confirmation = stack.double.messages[3]
    assert confirmation.to == STACK_PHONE
    assert time in confirmation.body
    token_in(confirmation.body)

    # The tap is audited as the taker's in messaging, the booking in scheduling.
    link_actions = [
        a
        for a in await audit_records_of(stack, "messaging")
        if a["resource_type"] == "Communication" and a["action"] == "create"
    ]
    assert [(a["actor_id"], a["outcome_detail"]) for a in link_actions] == [
        (taker, "accept by secure link")
    ]
    by_taker = [a for a in await audit_records_of(stack, "scheduling") if a["actor_id"] == taker]
    assert ("create", mine["id"]) in [(a["action"], a["resource_id"]) for a in by_taker]

    # No page and no SMS names a patient, the provider or the kind of care.
    assert len(stack.texts) >= 8
    for text in stack.texts:
        for marker in (*PHI_MARKERS, FAMILY, GIVEN, BIRTH_DATE, taker, other, leaving):
            assert marker.lower() not in text.lower(), f"{marker!r} leaked"
