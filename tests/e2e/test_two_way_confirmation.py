"""Two-way confirmation end to end (issue 4, must-show 3), every service real:

scheduling books an appointment -> its reminder timer fires -> `reminder.due` ->
messaging reads the patient's contact data from patients (service identity) -> SMS at
the Twilio double. The patient replies over the signed inbound webhook: `C` confirms
the appointment in scheduling, `R` brings numbered open slots by SMS and `2` rebooks
into the second one, `STOP` ends every later SMS. Each step is in the audit trail, and
no SMS carries the patient's name, birth date, the provider's name or the visit type.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

import httpx
import pytest

from careloop_kit.clock import FrozenClock
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.kafka import header, read_topic
from careloop_messaging.channels.sms import SIGNATURE_HEADER, compute_signature
from careloop_scheduling.handlers.reminders import reminder_worker

from .practice import PRACTICE_ZONE, open_practice, scheduling_beside
from .test_messaging_reminders import (
    BIRTH_DATE,
    FAMILY,
    GIVEN,
    PHI_MARKERS,
    Chain,
    admin_of_new_org,
    eventually,
    register,
    texts_recorded_as_sent,
)
from .test_messaging_reminders import chain as chain

pytestmark = pytest.mark.e2e

ZONE = PRACTICE_ZONE
PATIENT_PHONE = "+15550100777"


@dataclass
class Booked:
    org_id: str
    admin: dict[str, str]
    patient_id: str
    appointment_id: str
    scheduling: httpx.AsyncClient
    clock: FrozenClock
    runtime: Any


@pytest.fixture
async def booked(
    chain: Chain,
    make_database: Callable[[str], Any],
) -> AsyncIterator[Booked]:
    org_id, admin = await admin_of_new_org(chain.identity_url)
    patient_id = await register(chain, admin, allowed_channels=["sms"], preferred_channel="sms")
    app, clock = await scheduling_beside(chain, make_database)
    async with running_app(app) as client:
        practice = await open_practice(client, admin, clock.now())
        start = practice.at(10)
        appointment = await client.post(
            "/appointments",
            json={
                "patient_id": patient_id,
                "provider_id": practice.provider_id,
                "appointment_type_id": practice.type_id,
                "location_id": "loc-north",
                "start_at": start.astimezone(UTC).isoformat(),
            },
            headers=admin,
        )
        assert appointment.status_code == 201, appointment.text
        yield Booked(
            org_id,
            admin,
            patient_id,
            appointment.json()["id"],
            client,
            clock,
            app.state.runtime,
        )


async def reply(chain: Chain, body: str) -> None:
    """The patient's SMS, as Twilio posts it to the inbound webhook (signed)."""
    await texts_recorded_as_sent(chain)
    # Twilio signs the URL it called: here, the in-process app's own URL.
    url = f"{chain.messaging.base_url}".rstrip("/") + "/webhooks/twilio/inbound"
    form = {
        "MessageSid": "SM" + secrets.token_hex(16),
        "AccountSid": chain.double.account_sid,
        "From": PATIENT_PHONE,
        "To": "+15550009999",
        "Body": body,
    }
    signature = compute_signature(chain.double.auth_token, url, form)
    response = await chain.messaging.post(
        "/webhooks/twilio/inbound", data=form, headers={SIGNATURE_HEADER: signature}
    )
    assert response.status_code == 200, response.text


async def appointment(booked: Booked, appointment_id: str) -> dict[str, Any]:
    response = await booked.scheduling.get(f"/appointments/{appointment_id}", headers=booked.admin)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def audit_records(chain: Chain, service: str) -> list[dict[str, Any]]:
    records = await read_topic(
        chain.messaging_settings.kafka_bootstrap,
        f"{chain.messaging_settings.topic_prefix}careloop.{service}",
    )
    return [
        json.loads(r.value)
        for r in records
        if header(r, "ce_type") == "careloop.audit.access.recorded.v1"
    ]


async def test_confirm_reschedule_and_stop_by_sms(chain: Chain, booked: Booked) -> None:
    # The booking confirmation is due at once.
    assert await reminder_worker(booked.runtime).fire_due() >= 1
    await eventually(lambda: len(chain.double.messages) == 1)

    await reply(chain, "C")
    await eventually_async(
        lambda: appointment(booked, booked.appointment_id),
        lambda a: a["confirmation"] == "confirmed",
    )

    await reply(chain, "R")
    await eventually(lambda: len(chain.double.messages) == 2)
    offer = chain.double.messages[1].body
    assert "Reply 1, 2 or 3" in offer or "reply 1, 2 or 3" in offer.lower(), offer

    await reply(chain, "2")
    old = await eventually_async(
        lambda: appointment(booked, booked.appointment_id),
        lambda a: a["status"] == "cancelled",
    )
    new_id = old["rescheduled_to_id"]
    rebooked = await appointment(booked, new_id)
    assert rebooked["status"] == "booked"
    assert rebooked["rescheduled_from_id"] == booked.appointment_id

    await reply(chain, "STOP")
    # The new appointment's remaining reminders come due: none of them is texted.
    booked.clock.advance(timedelta(days=10))
    await reminder_worker(booked.runtime).fire_due()
    await asyncio.sleep(3)
    assert len(chain.double.messages) == 2

    # Each step is in the audit trail: the patient's replies (messaging), the
    # confirmation and the rebooking made for the patient (scheduling).
    messaging_audit = await audit_records(chain, "messaging")
    replies = [a for a in messaging_audit if a["resource_type"] == "Communication"]
    assert [a["actor_id"] for a in replies] == [booked.patient_id] * 3
    assert [a for a in messaging_audit if a["resource_type"] == "Consent"]
    scheduling_audit = await audit_records(chain, "scheduling")
    by_patient = [a for a in scheduling_audit if a["actor_id"] == booked.patient_id]
    assert {a["resource_id"] for a in by_patient} >= {booked.appointment_id, new_id}

    for message in chain.double.messages:
        for marker in (*PHI_MARKERS, FAMILY, GIVEN, BIRTH_DATE):
            assert marker.lower() not in message.body.lower(), f"{marker!r} leaked"


async def eventually_async(
    read: Callable[[], Any], check: Callable[[Any], bool], *, timeout_s: float = 30
) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await read()
        if check(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met in time: {value}")
        await asyncio.sleep(0.2)
