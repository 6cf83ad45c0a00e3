"""An inbound referral's whole loop through the gateway, every service real, on a
controlled clock (issue 12, must-show 1):

received -> (stage clock: stalled, a task; escalated, the task urgent) -> triaged ->
(stalled again: a second task) -> patient contacted (messaging texts the patient a
PHI-free note with a secure link; "please call me" on the link page puts a call-back on
the worklist) -> an appointment booked in scheduling and linked -> the patient checks in
(scheduling's event moves the referral to seen; a task asks the provider for the
outcome note) -> the outcome written -> the report reaches the referring provider's
SMTP relay and the loop is closed.

Identity, patients and messaging run on the wall clock (identity signs the staff and
service tokens patients and messaging use; messaging sends at once, in daytime). The
gateway, referrals, tasks and scheduling share one frozen clock, moved by the test, and
trust tokens from a test issuer on that clock: a day later by the clock, a token minted
then is as fresh as one minted now.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx
import pytest

from careloop_gateway.app import create_app as create_gateway
from careloop_gateway.settings import GatewaySettings
from careloop_identity.app import create_app as create_identity
from careloop_identity.settings import IdentitySettings
from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import FrozenClock
from careloop_kit.infra.ports import free_port
from careloop_kit.testing.apps import serve_in_task, serve_in_tasks
from careloop_kit.testing.services import ServiceSettingsFactory
from careloop_kit.testing.smtp import SmtpCollector, email_texts, smtp_server
from careloop_messaging.app import create_app as create_messaging
from careloop_messaging.settings import MessagingSettings
from careloop_messaging.testing.twilio_double import TwilioDouble
from careloop_patients.app import create_app as create_patients
from careloop_patients.settings import PatientsSettings
from careloop_referrals.app import create_app as create_referrals
from careloop_referrals.handlers.clocks import clock_worker
from careloop_referrals.settings import ReferralsSettings
from careloop_scheduling.app import create_app as create_scheduling
from careloop_scheduling.settings import SchedulingSettings
from careloop_tasks.app import create_app as create_tasks
from careloop_tasks.settings import TasksSettings

from .practice import PRACTICE_NAME, PRACTICE_ZONE
from .test_messaging_reminders import (
    BIRTH_DATE,
    BOOTSTRAP,
    FAMILY,
    GIVEN,
    PHI_MARKERS,
    admin_of_new_org,
)
from .test_two_way_confirmation import eventually_async

pytestmark = pytest.mark.e2e

API = "/api/v1"
LINKS = f"{API}/messaging/links"
REFERRER_NAME = "Dr. Marguerite Vantongeren"
REFERRER_EMAIL = "dr-vantongeren@clinic.example"
SPECIALTY = "neurology"
REASON = "Synthetic: marker-RSN-57 progressive neuropathy, neurology opinion wanted"
NOTE = "Synthetic outcome: marker-OUT-58 nerve study done, follow up in three months."
# Nothing the patient is sent or shown may say who they are, who referred them, to what
# kind of care, or why.
REFERRAL_PHI = (
    *PHI_MARKERS,
    REFERRER_NAME,
    "Vantongeren",
    SPECIALTY,
    "marker-RSN-57",
    "neuropathy",
)


@dataclass
class Loop:
    gateway: httpx.AsyncClient
    clock: FrozenClock
    issuer: TestTokenIssuer
    org_id: str
    location_id: str
    patient_id: str
    referrals_runtime: Any
    double: TwilioDouble
    mail: SmtpCollector
    link_base: str
    seen_by_patient: list[str] = field(default_factory=list)

    def staff(self) -> dict[str, str]:
        """A coordinator's token, minted at the shared clock's now."""
        token = self.issuer.mint(
            org=self.org_id,
            sub="user-coordinator",
            sid="session-coordinator",
            roles=["org_admin"],
            loc=["*"],
            amr=["pwd", "otp"],
        )
        return {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self.gateway.request(
            method, f"{API}{path}", headers=self.staff(), **kwargs
        )
        assert response.status_code < 300, f"{method} {path}: {response.text}"
        body: dict[str, Any] = response.json()
        return body

    async def referral(self, referral_id: str) -> dict[str, Any]:
        return await self.call("GET", f"/referrals/referrals/{referral_id}")

    async def move(self, referral_id: str, to: str, **more: Any) -> dict[str, Any]:
        return await self.call(
            "POST", f"/referrals/referrals/{referral_id}/transitions", json={"to": to, **more}
        )

    async def tasks_of(self, referral_id: str) -> list[dict[str, Any]]:
        page = await self.call(
            "GET",
            "/tasks/tasks",
            params={"subject_kind": "referral", "subject_id": referral_id, "limit": 100},
        )
        items: list[dict[str, Any]] = page["items"]
        return items

    async def tasks_until(
        self, referral_id: str, check: Callable[[list[dict[str, Any]]], bool]
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await eventually_async(
            lambda: self.tasks_of(referral_id), check, timeout_s=60
        )
        return found

    async def after(self, delta: timedelta) -> int:
        """Move the shared clock on and fire what came due in referrals; how many fired."""
        self.clock.advance(delta)
        fired: int = await clock_worker(self.referrals_runtime).fire_due()
        return fired


def kinds(tasks: list[dict[str, Any]]) -> list[str]:
    return sorted(task["kind"] for task in tasks)


@pytest.fixture
async def loop(service_settings: ServiceSettingsFactory, topic_prefix: str) -> AsyncIterator[Loop]:
    async def settings_of(kind: type[Any], service: str, **overrides: Any) -> Any:
        return await service_settings(kind, service, topic_prefix=topic_prefix, **overrides)

    clock = FrozenClock(datetime.now(UTC).replace(microsecond=0))
    issuer = TestTokenIssuer(clock)
    shared_clock = {"clock": clock, "jwks": StaticJwksSource(issuer.jwks_document())}
    double = TwilioDouble("AC" + "3" * 32, "test-" + "4" * 32)
    ports = {name: free_port() for name in ("patients", "messaging", "gateway", "referrals")}
    ports |= {"tasks": free_port(), "scheduling": free_port()}
    local = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    link_base = f"{local['gateway']}{LINKS}"
    identity_app = create_identity(
        await settings_of(
            IdentitySettings, "identity", bootstrap_token=BOOTSTRAP["X-Bootstrap-Token"]
        )
    )
    with smtp_server() as (mail, smtp_port):
        async with (
            serve_in_task(identity_app) as identity_url,
            serve_in_task(double.app) as twilio_url,
        ):
            jwks_url = {"auth_jwks_url": f"{identity_url}/.well-known/jwks.json"}
            patients_app = create_patients(
                await settings_of(PatientsSettings, "patients", **jwks_url)
            )
            messaging_app = create_messaging(
                await settings_of(
                    MessagingSettings,
                    "messaging",
                    delivery_mode="provider",
                    patients_url=local["patients"],
                    identity_token_url=f"{identity_url}/oauth/token",
                    twilio_api_base=twilio_url,
                    twilio_account_sid=double.account_sid,
                    twilio_auth_token=double.auth_token,
                    twilio_from_number="+15550009999",
                    secure_link_base=link_base,
                    delivery_poll_interval_s=0.05,
                    **jwks_url,
                )
            )
            referrals_app = create_referrals(
                await settings_of(
                    ReferralsSettings,
                    "referrals",
                    report_delivery_mode="provider",
                    smtp_host="127.0.0.1",
                    smtp_port=smtp_port,
                    smtp_security="none",
                    # The test fires the clocks itself, after moving the clock.
                    clock_poll_interval_s=3600,
                ),
                **shared_clock,
            )
            tasks_app = create_tasks(await settings_of(TasksSettings, "tasks"), **shared_clock)
            scheduling_app = create_scheduling(
                await settings_of(SchedulingSettings, "scheduling", reminder_poll_interval_s=3600),
                **shared_clock,
            )
            routes = {
                name: local[name] for name in ("messaging", "referrals", "tasks", "scheduling")
            }
            gateway_app = create_gateway(
                await settings_of(GatewaySettings, "gateway", routes=routes), **shared_clock
            )
            apps = {
                "patients": patients_app,
                "messaging": messaging_app,
                "referrals": referrals_app,
                "tasks": tasks_app,
                "scheduling": scheduling_app,
                "gateway": gateway_app,
            }
            async with (
                serve_in_tasks(apps, ports=ports),
                httpx.AsyncClient(base_url=local["gateway"], timeout=30) as gateway,
                httpx.AsyncClient(base_url=identity_url) as identity,
                httpx.AsyncClient(base_url=local["patients"]) as patients,
            ):
                org_id, admin = await admin_of_new_org(identity_url)
                # Identity owns locations: its event gives referrals and scheduling their
                # views (the practice's name and zone).
                location = await identity.post(
                    f"/organizations/{org_id}/locations",
                    json={"name": PRACTICE_NAME, "time_zone": PRACTICE_ZONE.key},
                    headers=admin,
                )
                assert location.status_code == 201, location.text
                location_id = str(location.json()["id"])
                created = await patients.post(
                    "/patients",
                    json={
                        "location_id": location_id,
                        "name": {"family": FAMILY, "given": [GIVEN]},
                        "birth_date": BIRTH_DATE,
                        "sex": "female",
                        "phones": ["+1 555 0100 779"],
                        "preferred_language": "en",
                        "preferences": {"allowed_channels": ["sms"], "preferred_channel": "sms"},
                    },
                    headers=admin,
                )
                assert created.status_code == 201, created.text
                yield Loop(
                    gateway=gateway,
                    clock=clock,
                    issuer=issuer,
                    org_id=org_id,
                    location_id=location_id,
                    patient_id=str(created.json()["id"]),
                    referrals_runtime=referrals_app.state.runtime,
                    double=double,
                    mail=mail,
                    link_base=link_base,
                )


async def book_visit(loop: Loop) -> tuple[str, datetime]:
    """A provider with a window two days on, once scheduling knows the location, and
    the patient's visit in it: the appointment's id and start (10:00 practice time)."""
    await eventually_async(
        lambda: loop.gateway.get(
            f"{API}/scheduling/locations/{loop.location_id}", headers=loop.staff()
        ),
        lambda response: response.status_code == 200,
        timeout_s=60,
    )
    day = (loop.clock.now() + timedelta(days=2)).astimezone(PRACTICE_ZONE).date()
    provider = await loop.call(
        "POST",
        "/scheduling/providers",
        json={"display_name": "Dr. Okonkwo-Lindqvist", "location_ids": [loop.location_id]},
    )
    kind = await loop.call(
        "POST",
        "/scheduling/appointment-types",
        json={"name": "Nerve study", "duration_minutes": 30, "patient_kind": "new"},
    )
    await loop.call(
        "POST",
        f"/scheduling/providers/{provider['id']}/availability",
        json={
            "location_id": loop.location_id,
            "weekday": day.weekday(),
            "start": "09:00",
            "end": "17:00",
        },
    )
    start = datetime.combine(day, time(10), PRACTICE_ZONE)
    booked = await loop.call(
        "POST",
        "/scheduling/appointments",
        json={
            "patient_id": loop.patient_id,
            "provider_id": provider["id"],
            "appointment_type_id": kind["id"],
            "location_id": loop.location_id,
            "start_at": start.astimezone(UTC).isoformat(),
        },
    )
    return booked["id"], start


async def test_an_inbound_referral_from_received_to_outcome_reported(loop: Loop) -> None:
    referrer = await loop.call(
        "POST",
        "/referrals/referrals/directory",
        json={
            "kind": "provider",
            "npi": "1245319599",
            "name": REFERRER_NAME,
            "specialty": "family-medicine",
            "contact": {"email": REFERRER_EMAIL},
            "preferred_channel": "secure-email",
        },
    )
    referral = await loop.call(
        "POST",
        "/referrals/referrals",
        json={
            "location_id": loop.location_id,
            "patient_id": loop.patient_id,
            "direction": "inbound",
            "urgency": "routine",
            "referring_provider_id": referrer["id"],
            "reason": REASON,
        },
    )
    rid = str(referral["id"])
    assert referral["stage"] == "received"

    # Received, untouched: two days on (routine) it stalls and a coordinator gets a task;
    # a day later the same task is raised to urgent. Firing again adds nothing.
    assert await loop.after(timedelta(hours=47)) == 0
    assert await loop.after(timedelta(hours=1, minutes=1)) == 1
    [stalled] = await loop.tasks_until(rid, lambda ts: len(ts) == 1)
    assert (stalled["kind"], stalled["priority"]) == ("referral-stalled", "high")
    assert stalled["title"] == "Referral stalled at received"
    assert await loop.after(timedelta(hours=24)) == 1
    [escalated] = await loop.tasks_until(rid, lambda ts: ts[0]["priority"] == "urgent")
    assert escalated["id"] == stalled["id"]
    assert await loop.after(timedelta(hours=24)) == 0

    # Triaged, then left: three days on it stalls in that stage, a second task.
    await loop.move(rid, "triaged")
    assert await loop.after(timedelta(hours=72, minutes=1)) == 1
    tasks = await loop.tasks_until(rid, lambda ts: len(ts) == 2)
    assert [t["title"] for t in tasks if t["id"] != stalled["id"]] == [
        "Referral stalled at triaged"
    ]

    # Patient contacted: messaging texts the patient, naming nothing but the practice.
    contacted = await loop.move(rid, "patient-contacted")
    assert contacted["stage"] == "patient-contacted"
    await eventually_async(lambda: _count(loop.double.messages), lambda n: n == 1, timeout_s=60)
    text = loop.double.messages[0].body
    loop.seen_by_patient.append(text)
    assert text.startswith(f"{PRACTICE_NAME}: a referral for you is ready to be booked")
    found = re.search(re.escape(loop.link_base) + r"/([A-Za-z0-9_-]+)", text)
    assert found, text
    link = f"{LINKS}/{found.group(1)}"

    # The link, opened through the gateway with no token, offers a call back; asking for
    # it puts a call on the coordinators' worklist, once.
    page = await loop.gateway.get(link)
    loop.seen_by_patient.append(page.text)
    assert page.status_code == 200, page.text
    assert "ready to be booked" in page.text
    assert PRACTICE_NAME in page.text
    asked = await loop.gateway.post(link, json={"action": "call_me"}, headers=_JSON)
    loop.seen_by_patient.append(asked.text)
    assert asked.status_code == 200, asked.text
    assert asked.json()["state"] == "callback_requested"
    again = await loop.gateway.post(link, json={"action": "call_me"}, headers=_JSON)
    assert again.status_code == 409
    tasks = await loop.tasks_until(rid, lambda ts: "referral-callback" in kinds(ts))
    assert kinds(tasks) == ["referral-callback", "referral-stalled", "referral-stalled"]
    [callback] = [t for t in tasks if t["kind"] == "referral-callback"]
    assert (callback["queue"], callback["patient_id"]) == (
        f"referral-coordinator@{loop.location_id}",
        loop.patient_id,
    )

    # The coordinator books the visit and links it: scheduled.
    appointment_id, start = await book_visit(loop)
    scheduled = await loop.move(rid, "scheduled", appointment_id=appointment_id)
    assert scheduled["appointment_id"] == appointment_id

    # The day of the visit: the patient checks in and scheduling's event moves the
    # referral to seen; the provider is asked for the outcome note.
    loop.clock.set((start - timedelta(minutes=30)).astimezone(UTC))
    await loop.call("POST", f"/scheduling/appointments/{appointment_id}/check-in")
    seen = await eventually_async(
        lambda: loop.referral(rid), lambda r: r["stage"] == "seen", timeout_s=60
    )
    assert seen["history"][-1]["actor"] == "service:referrals"
    tasks = await loop.tasks_until(rid, lambda ts: "referral-outcome-note" in kinds(ts))
    [note_task] = [t for t in tasks if t["kind"] == "referral-outcome-note"]
    assert note_task["queue"] == f"provider@{loop.location_id}"

    # The outcome goes back to the referring provider; the relay's acceptance closes it.
    written = await loop.call("POST", f"/referrals/referrals/{rid}/outcome", json={"note": NOTE})
    assert written["outcome"]["status"] == "pending"
    assert await loop.after(timedelta(seconds=1)) == 1
    [report] = loop.mail.messages
    assert loop.mail.envelopes[0].rcpt_tos == [REFERRER_EMAIL]
    assert "marker-OUT-58" in report.get_content()
    assert all(FAMILY not in part and GIVEN not in part for part in email_texts(report))
    closed = await loop.referral(rid)
    assert closed["stage"] == "outcome-reported"
    assert closed["outcome"]["status"] == "sent"
    assert [step["to_stage"] for step in closed["history"]] == [
        "received",
        "triaged",
        "patient-contacted",
        "scheduled",
        "seen",
        "outcome-reported",
    ]

    # One text in the whole loop, and nothing the patient saw says who, why or to whom.
    assert len(loop.double.messages) == 1
    for seen_text in loop.seen_by_patient:
        for marker in REFERRAL_PHI:
            assert marker.lower() not in seen_text.lower(), (marker, seen_text)


_JSON = {"Accept": "application/json"}


async def _count(items: list[Any]) -> int:
    return len(items)
