"""Secure one-time links end to end (issue 4), every service real and the link opened
through the gateway as a patient's phone would:

scheduling books -> its confirmation timer fires -> messaging texts the Twilio double ->
the link is read from the SMS -> GET through the gateway (no access token) shows the
visit -> POST confirms it in scheduling. A second visit is cancelled by its link (its
remaining reminder timers end); a third asks for other times by its link, the offer SMS
brings a new link, and choosing option 2 there rebooks the visit. No page and no SMS
carries the patient's name, birth date, the provider's name or the visit type.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

import careloop_gateway
import careloop_identity
import careloop_messaging
import careloop_patients
import careloop_scheduling
from careloop_gateway.app import create_app as create_gateway
from careloop_gateway.settings import GatewaySettings
from careloop_identity.app import create_app as create_identity
from careloop_identity.settings import IdentitySettings
from careloop_kit.clock import FrozenClock
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.infra.openbao import bootstrap_vault
from careloop_kit.infra.ports import free_port
from careloop_kit.testing.apps import running_app, serve_in_task
from careloop_kit.testing.kafka import header, read_topic
from careloop_messaging.app import create_app as create_messaging
from careloop_messaging.domain.outreach import local_date_and_time
from careloop_messaging.settings import MessagingSettings
from careloop_messaging.testing.twilio_double import TwilioDouble
from careloop_patients.app import create_app as create_patients
from careloop_patients.settings import PatientsSettings
from careloop_scheduling.app import create_app as create_scheduling
from careloop_scheduling.handlers.reminders import reminder_worker
from careloop_scheduling.settings import SchedulingSettings
from careloop_scheduling.store.tables import platform as scheduling_platform

from .practice import PRACTICE_ZONE, open_practice
from .test_messaging_reminders import (
    BIRTH_DATE,
    BOOTSTRAP,
    FAMILY,
    GIVEN,
    PHI_MARKERS,
    admin_of_new_org,
    eventually,
)
from .test_two_way_confirmation import eventually_async

pytestmark = pytest.mark.e2e

ZONE = PRACTICE_ZONE
LINKS = "/api/v1/messaging/links"
JSON = {"Accept": "application/json"}


@dataclass
class Stack:
    gateway: httpx.AsyncClient
    """An anonymous client of the gateway: the patient's phone holds no access token."""
    link_base: str
    double: TwilioDouble
    scheduling: httpx.AsyncClient
    scheduling_runtime: Any
    clock: FrozenClock
    admin: dict[str, str]
    org_id: str
    patient_id: str
    provider_id: str
    type_id: str
    day: Any
    messaging_settings: MessagingSettings
    texts: list[str]
    """Every page and SMS the patient saw, for the PHI scan."""

    async def book(self, hour: int) -> dict[str, Any]:
        start = datetime.combine(self.day, datetime.min.time().replace(hour=hour), ZONE)
        booked = await self.scheduling.post(
            "/appointments",
            json={
                "patient_id": self.patient_id,
                "provider_id": self.provider_id,
                "appointment_type_id": self.type_id,
                "location_id": "loc-north",
                "start_at": start.astimezone(UTC).isoformat(),
            },
            headers=self.admin,
        )
        assert booked.status_code == 201, booked.text
        body: dict[str, Any] = booked.json()
        return body

    async def appointment(self, appointment_id: str) -> dict[str, Any]:
        found = await self.scheduling.get(f"/appointments/{appointment_id}", headers=self.admin)
        assert found.status_code == 200, found.text
        body: dict[str, Any] = found.json()
        return body

    async def next_sms_token(self, count: int) -> str:
        """Wait for the `count`-th SMS and return the token of the link it carries."""
        await eventually(lambda: len(self.double.messages) >= count)
        body = self.double.messages[count - 1].body
        self.texts.append(body)
        found = re.search(re.escape(self.link_base) + r"/([A-Za-z0-9_-]+)", body)
        assert found, body
        return found.group(1)

    async def fire_due(self) -> None:
        await reminder_worker(self.scheduling_runtime).fire_due()

    async def open(self, token: str) -> httpx.Response:
        page = await self.gateway.get(f"{LINKS}/{token}")
        self.texts.append(page.text)
        return page

    async def pending_timer_keys(self, appointment_id: str) -> list[str]:
        timer = scheduling_platform.timer
        async with self.scheduling_runtime.sessionmaker() as session:
            keys = await session.scalars(
                select(timer.c.dedup_key).where(
                    timer.c.dedup_key.startswith(f"{appointment_id}:"),
                    timer.c.fired_at.is_(None),
                    timer.c.cancelled_at.is_(None),
                )
            )
            return sorted(k for k in keys if k is not None)


@pytest.fixture
async def stack(
    make_database: Callable[[str], Awaitable[str]],
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    vault_root_token: str,
    topic_prefix: str,
) -> AsyncIterator[Stack]:
    packages = {
        "identity": careloop_identity,
        "patients": careloop_patients,
        "messaging": careloop_messaging,
        "scheduling": careloop_scheduling,
        "gateway": careloop_gateway,
    }
    dsns = {name: await make_database(name) for name in packages}
    for name, package in packages.items():
        await upgrade_async(Path(package.__file__).parent / "migrations", dsns[name])
    # The recipient and link keys at their default paths, as `bootstrap_vault` made them.
    gateway_token = bootstrap_vault(vault_addr, vault_root_token, ["gateway"])["gateway"]
    common: dict[str, Any] = {
        "environment": "test",
        "kafka_bootstrap": kafka_bootstrap,
        "vault_addr": vault_addr,
        "topic_prefix": topic_prefix,
        "log_json": False,
    }
    double = TwilioDouble("AC" + "1" * 32, "test-" + "2" * 32)
    identity_app = create_identity(
        IdentitySettings(
            database_url=dsns["identity"],
            vault_token=vault_tokens["identity"],
            bootstrap_token=BOOTSTRAP["X-Bootstrap-Token"],
            **common,
        )
    )
    patients_port, messaging_port, gateway_port = free_port(), free_port(), free_port()
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    link_base = f"{gateway_url}{LINKS}"
    async with (
        serve_in_task(identity_app) as identity_url,
        serve_in_task(double.app) as twilio_url,
    ):
        jwks = {"auth_jwks_url": f"{identity_url}/.well-known/jwks.json"}
        patients_app = create_patients(
            PatientsSettings(
                database_url=dsns["patients"],
                vault_token=vault_tokens["patients"],
                **jwks,
                **common,
            )
        )
        messaging_settings = MessagingSettings(
            database_url=dsns["messaging"],
            vault_token=vault_tokens["messaging"],
            delivery_mode="provider",
            patients_url=f"http://127.0.0.1:{patients_port}",
            identity_token_url=f"{identity_url}/oauth/token",
            twilio_api_base=twilio_url,
            twilio_account_sid=double.account_sid,
            twilio_auth_token=double.auth_token,
            twilio_from_number="+15550009999",
            secure_link_base=link_base,
            delivery_poll_interval_s=0.05,
            **common,
        )
        gateway_app = create_gateway(
            GatewaySettings(
                database_url=dsns["gateway"],
                vault_token=gateway_token,
                routes={"messaging": f"http://127.0.0.1:{messaging_port}"},
                **jwks,
                **common,
            )
        )
        clock = FrozenClock(datetime.now(UTC).replace(microsecond=0))
        scheduling_app = create_scheduling(
            SchedulingSettings(
                database_url=dsns["scheduling"],
                vault_token=vault_tokens["scheduling"],
                reminder_poll_interval_s=3600,
                **jwks,
                **common,
            ),
            clock=clock,
        )
        async with (
            serve_in_task(patients_app, port=patients_port) as patients_url,
            serve_in_task(create_messaging(messaging_settings), port=messaging_port),
            serve_in_task(gateway_app, port=gateway_port),
            running_app(scheduling_app) as scheduling,
            httpx.AsyncClient(base_url=gateway_url) as gateway,
            httpx.AsyncClient(base_url=patients_url) as patients,
        ):
            org_id, admin = await admin_of_new_org(identity_url)
            created = await patients.post(
                "/patients",
                json={
                    "location_id": "loc-north",
                    "name": {"family": FAMILY, "given": [GIVEN]},
                    "birth_date": BIRTH_DATE,
                    "sex": "female",
                    "phones": ["+1 555 0100 778"],
                    "preferred_language": "en",
                    "preferences": {"allowed_channels": ["sms"], "preferred_channel": "sms"},
                },
                headers=admin,
            )
            assert created.status_code == 201, created.text
            practice = await open_practice(scheduling, admin, clock.now())
            yield Stack(
                gateway=gateway,
                link_base=link_base,
                double=double,
                scheduling=scheduling,
                scheduling_runtime=scheduling_app.state.runtime,
                clock=clock,
                admin=admin,
                org_id=org_id,
                patient_id=str(created.json()["id"]),
                provider_id=practice.provider_id,
                type_id=practice.type_id,
                day=practice.day,
                messaging_settings=messaging_settings,
                texts=[],
            )


async def test_confirm_cancel_and_rebook_by_secure_link_through_the_gateway(
    stack: Stack,
) -> None:
    # 1. Confirm: the booking confirmation is due at once.
    first = await stack.book(10)
    await stack.fire_due()
    token = await stack.next_sms_token(1)

    page = await stack.open(token)
    assert page.status_code == 200, page.text
    assert "Bayview Family Practice" in page.text
    assert f"{first['start_at']}" not in page.text  # local time only, never UTC ids
    day, time = local_date_and_time(datetime.fromisoformat(first["start_at"]), ZONE.key, "en")
    assert day in page.text
    assert time in page.text
    # Opening the page (a link scanner's GET) did nothing.
    assert (await stack.appointment(first["id"]))["confirmation"] == "unconfirmed"

    confirmed = await stack.gateway.post(f"{LINKS}/{token}", data={"action": "confirm"})
    stack.texts.append(confirmed.text)
    assert confirmed.status_code == 200, confirmed.text
    await eventually_async(
        lambda: stack.appointment(first["id"]), lambda a: a["confirmation"] == "confirmed"
    )
    again = await stack.gateway.post(f"{LINKS}/{token}", json={"action": "cancel"}, headers=JSON)
    assert again.status_code == 409
    assert again.json()["done"]["action"] == "confirm"

    # 2. Cancel: the visit is cancelled in scheduling and its reminders end.
    second = await stack.book(11)
    await stack.fire_due()
    token = await stack.next_sms_token(2)
    assert await stack.pending_timer_keys(second["id"]) != []

    cancelled = await stack.gateway.post(f"{LINKS}/{token}", data={"action": "cancel"})
    stack.texts.append(cancelled.text)
    assert cancelled.status_code == 200, cancelled.text
    gone = await eventually_async(
        lambda: stack.appointment(second["id"]), lambda a: a["status"] == "cancelled"
    )
    assert gone["cancel_reason"] == "cancelled by the patient"
    assert await stack.pending_timer_keys(second["id"]) == []

    # 3. Reschedule: other times by SMS, each with its own link; option 2 rebooks.
    third = await stack.book(12)
    await stack.fire_due()
    token = await stack.next_sms_token(3)
    asked = await stack.gateway.post(f"{LINKS}/{token}", data={"action": "reschedule"})
    stack.texts.append(asked.text)
    assert asked.status_code == 200, asked.text
    assert "We will send you a few open times" in asked.text

    offer_token = await stack.next_sms_token(4)
    assert "Reply 1, 2 or 3" in stack.double.messages[3].body
    offer_page = await stack.open(offer_token)
    assert offer_page.status_code == 200, offer_page.text
    listed = (await stack.gateway.get(f"{LINKS}/{offer_token}", headers=JSON)).json()
    assert [o["choice"] for o in listed["options"]] == [1, 2, 3]
    chosen = await stack.gateway.post(
        f"{LINKS}/{offer_token}", data={"action": "choose", "choice": "2"}
    )
    stack.texts.append(chosen.text)
    assert chosen.status_code == 200, chosen.text
    old = await eventually_async(
        lambda: stack.appointment(third["id"]), lambda a: a["status"] == "cancelled"
    )
    rebooked = await stack.appointment(old["rescheduled_to_id"])
    assert rebooked["status"] == "booked"
    option_2 = listed["options"][1]
    assert local_date_and_time(datetime.fromisoformat(rebooked["start_at"]), ZONE.key, "en") == (
        option_2["date"],
        option_2["time"],
    )

    # Each link action is audited with the patient as actor, in messaging and scheduling.
    link_actions = [
        a
        for a in await audit_records_of(stack, "messaging")
        if a["resource_type"] == "Communication" and a["action"] == "create"
    ]
    assert [a["outcome_detail"] for a in link_actions] == [
        "confirm by secure link",
        "cancel by secure link",
        "reschedule by secure link",
        "choose by secure link",
    ]
    assert {a["actor_id"] for a in link_actions} == {stack.patient_id}
    scheduling_details = {
        a["outcome_detail"]
        for a in await audit_records_of(stack, "scheduling")
        if a["actor_id"] == stack.patient_id
    }
    assert {
        "confirmed by secure link",
        "cancelled by secure link",
        "reschedule offered by secure link",
    } <= scheduling_details

    # No page and no SMS names the patient, the provider or the kind of care.
    assert len(stack.texts) >= 10
    for text in stack.texts:
        for marker in (*PHI_MARKERS, stack.patient_id):
            assert marker.lower() not in text.lower(), f"{marker!r} leaked"


async def audit_records_of(stack: Stack, service: str) -> list[dict[str, Any]]:
    """Audit records a service published on its topic (the audit service consumes them)."""
    settings = stack.messaging_settings
    records = await read_topic(
        settings.kafka_bootstrap, f"{settings.topic_prefix}careloop.{service}"
    )
    return [
        json.loads(r.value)
        for r in records
        if header(r, "ce_type") == "careloop.audit.access.recorded.v1"
    ]
