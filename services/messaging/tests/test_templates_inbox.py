"""Saved templates and the portal inbox against real PostgreSQL, Kafka and OpenBao.

Templates are saved, versioned, reverted and previewed over HTTP with tokens the test
signs; the delivery worker then renders what was saved (SMS reach the Twilio double).
Portal messages land in the inbox table, once, and patients and staff read them over
HTTP within their rights.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import hvac
import pytest
from sqlalchemy import select, update

import careloop_messaging
from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import SystemClock
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.infra.ports import free_port
from careloop_kit.service import Runtime
from careloop_kit.testing.apps import serve_in_task
from careloop_kit.testing.kafka import header, wait_for_records
from careloop_messaging.app import create_app
from careloop_messaging.channels.portal import PortalInboxChannel
from careloop_messaging.domain.channels import OutboundMessage
from careloop_messaging.domain.outreach import ContactData, MessageStatus, Recipient
from careloop_messaging.domain.templates import Channel
from careloop_messaging.settings import MessagingSettings
from careloop_messaging.store.repository import Messages, NewMessage, RecipientCipher
from careloop_messaging.store.tables import inbox_item, message
from careloop_messaging.testing.twilio_double import TwilioDouble
from careloop_messaging.usecases.context import CIPHER_KEY

pytestmark = pytest.mark.service

MIGRATIONS = Path(careloop_messaging.__file__).parent / "migrations"
ACCESS = "careloop.audit.access.recorded.v1"
NORTH, SOUTH = "loc-north", "loc-south"
E164 = "+15552013344"
REMINDER_SMS = "/templates/reminder/sms/en"
ORG_SMS = (
    "{{ practice_name }}: see you {{ appointment_date }} at {{ appointment_time }}. "
    "{{ secure_link }}"
)
PROBLEM = "application/problem+json"


class NoContacts:
    """The patients port: these tests queue their messages directly, so it is never asked."""

    async def contact(self, org_id: str, patient_id: str) -> ContactData | None:
        raise AssertionError("the patients port is not used by these tests")


@dataclass
class ApiRig:
    http: httpx.AsyncClient
    runtime: Runtime
    settings: MessagingSettings
    double: TwilioDouble
    issuer: TestTokenIssuer
    org_id: str

    def headers(self, **claims: Any) -> dict[str, str]:
        """A token of this organization; by default an org admin of every location who
        signed in with a one-time code."""
        values: dict[str, Any] = {
            "org": self.org_id,
            "sub": f"user-{uuid.uuid4().hex[:8]}",
            "roles": ["org_admin"],
            "loc": ["*"],
            "amr": ["pwd", "otp"],
        }
        values.update(claims)
        return {"Authorization": f"Bearer {self.issuer.mint(**values)}"}

    def patient(self, patient_id: str, **claims: Any) -> dict[str, str]:
        return self.headers(
            sub=f"portal-{patient_id}",
            act="patient",
            roles=["patient"],
            loc=[],
            pat=patient_id,
            amr=["pwd"],
            **claims,
        )

    async def queue(
        self,
        channel: Channel,
        *,
        location_id: str = NORTH,
        patient_id: str | None = None,
        address: str = E164,
        sensitive: bool = False,
    ) -> tuple[str, str]:
        """A queued reminder, as the reminders consumer writes it: (message id, patient)."""
        cipher: RecipientCipher = self.runtime.state[CIPHER_KEY]
        message_id, patient = str(uuid.uuid4()), patient_id or f"pat-{uuid.uuid4().hex[:8]}"
        recipient = Recipient(channel, address)
        # Sealed in the transaction that stores the row, as the consumer does.
        async with self.runtime.sessionmaker() as session, session.begin():
            new = NewMessage(
                id=message_id,
                org_id=self.org_id,
                patient_id=patient,
                appointment_id=f"appt-{uuid.uuid4().hex[:8]}",
                location_id=location_id,
                touch_key=f"{message_id}:1_day_before",
                touch="1_day_before",
                language="en",
                practice_name="Bayview Family Practice",
                sensitive_location=sensitive,
                start_at=datetime(2031, 3, 4, 14, 30, tzinfo=UTC),
                time_zone="America/New_York",
                status=MessageStatus.QUEUED,
                channel=channel,
                recipient_ct=await cipher.seal(session, self.org_id, message_id, address),
                recipient_index=cipher.index(self.org_id, recipient),
                recipient_lookup=cipher.lookup(recipient),
            )
            assert await Messages(session).add(new, now=self.runtime.clock.now())
        return message_id, patient

    async def message_row(self, message_id: str) -> dict[str, Any]:
        async with self.runtime.sessionmaker() as session:
            row = (await session.execute(select(message).where(message.c.id == message_id))).one()
            return dict(row._mapping)

    async def wait_sent(self, message_id: str) -> dict[str, Any]:
        for _ in range(200):
            row = await self.message_row(message_id)
            if row["status"] != "queued":
                assert row["status"] == "sent", row
                return row
            await _sleep()
        raise AssertionError(f"message {message_id} was never sent")

    async def inbox_rows(self, message_id: str) -> list[dict[str, Any]]:
        async with self.runtime.sessionmaker() as session:
            rows = await session.execute(
                select(inbox_item).where(inbox_item.c.message_id == message_id)
            )
            return [dict(r._mapping) for r in rows]

    def sms_for(self, row: dict[str, Any]) -> str:
        (sms,) = [m for m in self.double.messages if m.sid == row["provider_id"]]
        return str(sms.body)

    async def accesses(self, predicate: Callable[[list[dict[str, Any]]], bool]) -> list[Any]:
        topic = f"{self.settings.topic_prefix}careloop.messaging"

        def matched(records: list[Any]) -> bool:
            return predicate(_accesses(records))

        return _accesses(await wait_for_records(self.settings.kafka_bootstrap, topic, matched))


def _accesses(records: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records if header(r, "ce_type") == ACCESS]


async def _sleep() -> None:
    await asyncio.sleep(0.05)


@pytest.fixture
async def api(
    make_database: Callable[[str], Awaitable[str]],
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    vault_root_token: str,
    topic_prefix: str,
    unique_id: str,
) -> AsyncIterator[ApiRig]:
    dsn = await make_database("messaging")
    await upgrade_async(MIGRATIONS, dsn)
    key_path = f"careloop/messaging/recipient-key-{unique_id}"
    hvac.Client(url=vault_addr, token=vault_root_token).secrets.kv.v2.create_or_update_secret(
        path=key_path,
        secret={"key": base64.b64encode(secrets.token_bytes(32)).decode()},
        mount_point="secret",
    )
    double = TwilioDouble("AC" + secrets.token_hex(16), "test-" + secrets.token_hex(16))
    issuer = TestTokenIssuer(SystemClock())
    port = free_port()
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
            secure_link_base="https://portal.example.test/m",
            delivery_backoff_s=0.1,
            delivery_poll_interval_s=0.05,
        )
        app = create_app(
            settings, contacts=NoContacts(), jwks=StaticJwksSource(issuer.jwks_document())
        )
        async with serve_in_task(app, port=port) as url, httpx.AsyncClient(base_url=url) as http:
            yield ApiRig(http, app.state.runtime, settings, double, issuer, f"org-{unique_id}")


# --- templates -----------------------------------------------------------------------


async def test_templates_are_saved_as_versions_and_reverted_to_the_default(api: ApiRig) -> None:
    admin = api.headers(sub="user-admin-1")
    listed = await api.http.get("/templates", headers=admin)
    assert listed.status_code == 200, listed.text
    assert listed.json()["count"] > 0
    assert all(item["built_in"] for item in listed.json()["items"])

    first = await api.http.put(REMINDER_SMS, json={"body": ORG_SMS}, headers=admin)
    second = await api.http.put(
        REMINDER_SMS, json={"body": "{{ practice_name }} v2 {{ secure_link }}"}, headers=admin
    )
    assert first.status_code == 200, first.text
    assert (first.json()["version"], first.json()["source"]) == (1, "organization")
    assert (second.json()["version"], second.json()["updated_by"]) == (2, "user-admin-1")

    current = (await api.http.get(REMINDER_SMS, headers=admin)).json()
    assert (current["version"], current["built_in"]) == (2, False)
    assert current["body"] == "{{ practice_name }} v2 {{ secure_link }}"
    items = (await api.http.get("/templates", headers=admin)).json()["items"]
    (saved,) = [
        i for i in items if (i["kind"], i["channel"], i["language"]) == ("reminder", "sms", "en")
    ]
    assert (saved["source"], saved["version"]) == ("organization", 2)
    assert sum(not i["built_in"] for i in items) == 1

    reverted = await api.http.delete(REMINDER_SMS, headers=admin)
    assert reverted.status_code == 204, reverted.text
    after = (await api.http.get(REMINDER_SMS, headers=admin)).json()
    assert (after["source"], after["built_in"], after["version"]) == ("built_in", True, None)
    versions = (await api.http.get(REMINDER_SMS + "/versions", headers=admin)).json()
    assert [(v["version"], v["reverted"]) for v in versions["items"]] == [
        (3, True),
        (2, False),
        (1, False),
    ]
    assert versions["items"][2]["body"] == ORG_SMS
    again = await api.http.delete(REMINDER_SMS, headers=admin)
    assert again.status_code == 404
    assert again.headers["content-type"].startswith(PROBLEM)

    # Each change is in the audit trail: who, what, no PHI category.
    accesses = await api.accesses(
        lambda a: sum(x["resource_type"] == "MessageTemplate" for x in a) >= 4
    )
    changes = [
        (a["action"], a["outcome"], a["actor_id"], a["resource_id"], a["phi_categories"])
        for a in sorted(accesses, key=lambda a: a["occurred_at"])
        if a["resource_type"] == "MessageTemplate"
    ]
    key = "organization:reminder:sms:en"
    assert changes == [
        ("update", "success", "user-admin-1", key, []),
        ("update", "success", "user-admin-1", key, []),
        ("delete", "success", "user-admin-1", key, []),
        ("delete", "error", "user-admin-1", key, []),
    ]


async def test_a_template_that_could_leak_phi_is_refused_with_what_is_allowed(
    api: ApiRig,
) -> None:
    admin = api.headers()
    refused = await api.http.put(
        REMINDER_SMS,
        json={"body": "Hi {{ patient_first_name }}, {{ secure_link }}"},
        headers=admin,
    )
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith(PROBLEM)
    problem = refused.json()
    assert problem["errors"] == [
        {"part": "body", "problem": "sms body: field 'patient_first_name' is not allowed"}
    ]
    assert problem["allowed_fields"] == {
        "body": [
            "appointment_date",
            "appointment_time",
            "practice_name",
            "reply_keywords",
            "secure_link",
        ]
    }
    assert "upper" in problem["allowed_filters"]

    email = await api.http.put(
        "/templates/reminder/email/en",
        json={
            "subject": "Your visit on {{ appointment_date }}",
            "body": "{{ practice_name.title }}",
        },
        headers=admin,
    )
    assert email.status_code == 422
    parts = {e["part"]: e["problem"] for e in email.json()["errors"]}
    assert "attribute access" in parts["body"]
    assert "field 'appointment_date' is not allowed" in parts["subject"]
    assert email.json()["allowed_fields"]["subject"] == ["practice_name"]

    # A location name could name a behavioral-health clinic: refused in saved templates.
    portal = await api.http.put(
        "/templates/reminder/portal/en",
        params={"location_id": NORTH},
        json={"subject": "Visit", "body": "At {{ location_name }}"},
        headers=admin,
    )
    assert portal.status_code == 422
    assert "location_name" in portal.json()["errors"][0]["problem"]

    with_subject = await api.http.put(
        REMINDER_SMS, json={"subject": "Hello", "body": "{{ secure_link }}"}, headers=admin
    )
    assert with_subject.status_code == 422
    assert with_subject.json()["errors"] == [
        {"part": "template", "problem": "an SMS template has only a body (no subject, no HTML)"}
    ]

    for path in (REMINDER_SMS, "/templates/reminder/email/en", "/templates/reminder/portal/en"):
        never = await api.http.get(path + "/versions", headers=admin)
        assert never.status_code == 404, path


async def test_a_preview_renders_sample_values_and_never_stores(api: ApiRig) -> None:
    admin = api.headers()
    draft = await api.http.post(REMINDER_SMS + "/preview", json={"body": ORG_SMS}, headers=admin)
    assert draft.status_code == 200, draft.text
    assert draft.json()["body"] == (
        "Sample Family Practice: see you Tue Mar 4 at 9:30 AM. "
        "https://portal.example.test/m/sample-link"
    )
    assert draft.json()["characters"] == len(draft.json()["body"])

    sensitive = await api.http.post(
        REMINDER_SMS + "/preview",
        json={"body": ORG_SMS, "sensitive_location": True, "practice_name": "Hope Behavioral"},
        headers=admin,
    )
    assert sensitive.json()["sender_name"] == "Your care team"
    assert "Hope" not in sensitive.json()["body"]

    portal = await api.http.post(
        "/templates/reminder/portal/en/preview",
        json={"subject": "From {{ practice_name }}", "body": "{{ provider_name }} expects you"},
        headers=admin,
    )
    assert portal.status_code == 200, portal.text
    assert (portal.json()["subject"], portal.json()["body"]) == (
        "From Sample Family Practice",
        "Dr. Sample expects you",
    )

    built_in = await api.http.post(REMINDER_SMS + "/preview", json={}, headers=admin)
    assert built_in.json()["body"].startswith("Sample Family Practice: reminder of your")

    refused = await api.http.post(
        REMINDER_SMS + "/preview", json={"body": "{{ visit_type }}"}, headers=admin
    )
    assert refused.status_code == 422
    assert (await api.http.get(REMINDER_SMS + "/versions", headers=admin)).status_code == 404


async def test_template_rights_follow_role_location_mfa_and_tenant(api: ApiRig) -> None:
    body = {"body": ORG_SMS}
    no_token = await api.http.get("/templates")
    assert no_token.status_code == 401

    front_desk = api.headers(roles=["front_desk"], loc=[NORTH])
    assert (await api.http.get("/templates", headers=front_desk)).status_code == 403

    no_mfa = await api.http.put(REMINDER_SMS, json=body, headers=api.headers(amr=["pwd"]))
    assert no_mfa.status_code == 403
    assert no_mfa.json()["type"].endswith("mfa-required")

    manager = api.headers(roles=["location_manager"], loc=[NORTH], amr=["pwd"])
    org_level = await api.http.put(REMINDER_SMS, json=body, headers=manager)
    assert org_level.status_code == 403
    own = await api.http.put(
        REMINDER_SMS, params={"location_id": NORTH}, json=body, headers=manager
    )
    assert own.status_code == 200, own.text
    assert (own.json()["source"], own.json()["location_id"]) == ("location", NORTH)
    other = await api.http.put(
        REMINDER_SMS, params={"location_id": SOUTH}, json=body, headers=manager
    )
    assert other.status_code == 403
    read_other = await api.http.get(REMINDER_SMS, params={"location_id": SOUTH}, headers=manager)
    assert read_other.status_code == 403

    # Another organization neither sees nor reverts this organization's template.
    stranger = api.headers(org=f"other-{uuid.uuid4().hex[:8]}")
    seen = await api.http.get(REMINDER_SMS, params={"location_id": NORTH}, headers=stranger)
    assert seen.json()["built_in"] is True
    gone = await api.http.delete(REMINDER_SMS, params={"location_id": NORTH}, headers=stranger)
    assert gone.status_code == 404
    versions = await api.http.get(
        REMINDER_SMS + "/versions", params={"location_id": NORTH}, headers=stranger
    )
    assert versions.status_code == 404
    mine = await api.http.get(REMINDER_SMS, params={"location_id": NORTH}, headers=api.headers())
    assert (mine.json()["source"], mine.json()["version"]) == ("location", 1)

    bad = await api.http.put("/templates/birthday/sms/en", json=body, headers=api.headers())
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith(PROBLEM)


async def test_the_delivery_worker_renders_the_saved_template_location_first(
    api: ApiRig,
) -> None:
    admin = api.headers()
    saved = await api.http.put(REMINDER_SMS, json={"body": ORG_SMS}, headers=admin)
    assert saved.status_code == 200, saved.text
    north = await api.http.put(
        REMINDER_SMS,
        params={"location_id": NORTH},
        json={"body": "{{ practice_name }} North: {{ appointment_time }} {{ secure_link }}"},
        headers=admin,
    )
    assert north.status_code == 200, north.text

    at_north, _ = await api.queue(Channel.SMS, location_id=NORTH)
    at_south, _ = await api.queue(Channel.SMS, location_id=SOUTH)
    north_body = api.sms_for(await api.wait_sent(at_north))
    south_body = api.sms_for(await api.wait_sent(at_south))

    assert north_body.startswith("Bayview Family Practice North: 9:30 AM https://portal.")
    assert south_body.startswith("Bayview Family Practice: see you Tue Mar 4 at 9:30 AM. https")

    # Reverting the location's template hands the location back to the organization's.
    assert (
        await api.http.delete(REMINDER_SMS, params={"location_id": NORTH}, headers=admin)
    ).status_code == 204
    later, _ = await api.queue(Channel.SMS, location_id=NORTH)
    assert api.sms_for(await api.wait_sent(later)).startswith("Bayview Family Practice: see you")


# --- portal inbox --------------------------------------------------------------------


async def test_a_portal_message_lands_in_the_inbox_once_even_if_delivered_twice(
    api: ApiRig,
) -> None:
    message_id, patient = await api.queue(Channel.PORTAL, address="portal")
    row = await api.wait_sent(message_id)
    (item,) = await api.inbox_rows(message_id)
    assert row["provider_id"] == item["id"]
    assert (item["patient_id"], item["location_id"], item["org_id"]) == (
        patient,
        NORTH,
        api.org_id,
    )
    # Stored only encrypted.
    assert b"reminder of your appointment" not in item["body_ct"]

    # A crash after the inbox write and before the worker's commit: the message is
    # queued again and the next attempt delivers it once more.
    async with api.runtime.sessionmaker() as session, session.begin():
        await session.execute(
            update(message)
            .where(message.c.id == message_id)
            .values(status="queued", next_attempt_at=api.runtime.clock.now(), provider_id=None)
        )
    again = await api.wait_sent(message_id)
    assert again["provider_id"] == item["id"]
    assert [r["id"] for r in await api.inbox_rows(message_id)] == [item["id"]]

    # The channel itself, sent the same message twice, answers with the same item.
    channel = api.runtime.state["delivery"].channels[Channel.PORTAL]
    assert isinstance(channel, PortalInboxChannel)
    outbound = OutboundMessage(
        message_id=message_id, channel=Channel.PORTAL, to="portal", body="x", sender_name="y"
    )
    results = [await channel.send(outbound) for _ in range(2)]
    assert {r.provider_id for r in results} == {item["id"]}
    assert len(await api.inbox_rows(message_id)) == 1


async def test_a_patient_reads_its_own_inbox_and_not_another_one(api: ApiRig) -> None:
    message_id, patient = await api.queue(Channel.PORTAL, address="portal")
    await api.wait_sent(message_id)
    (stored,) = await api.inbox_rows(message_id)
    mine = api.patient(patient)

    listed = await api.http.get("/inbox", headers=mine)
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert (item["id"], listed.json()["unread"]) == (stored["id"], 1)
    assert item["subject"] == "Appointment reminder from Bayview Family Practice"
    assert item["body"].startswith("This is a reminder of your appointment on Tue Mar 4")
    assert item["sender_name"] == "Bayview Family Practice"

    opened = await api.http.get(f"/inbox/{item['id']}", headers=mine)
    assert opened.status_code == 200, opened.text
    assert opened.json()["read_at"] is not None
    assert (await api.http.get("/inbox", headers=mine)).json()["unread"] == 0
    own_by_id = await api.http.get(f"/patients/{patient}/inbox", headers=mine)
    assert own_by_id.json()["count"] == 1

    intruder_id = f"pat-{uuid.uuid4().hex[:8]}"
    intruder = api.patient(intruder_id)
    assert (await api.http.get("/inbox", headers=intruder)).json()["items"] == []
    assert (await api.http.get(f"/inbox/{item['id']}", headers=intruder)).status_code == 404
    refused = await api.http.get(f"/patients/{patient}/inbox", headers=intruder)
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith(PROBLEM)

    # Every read is audited under the patient, refusals included.
    accesses = await api.accesses(
        lambda a: sum(x["resource_type"] == "Communication" for x in a) >= 7
    )
    reads = [a for a in accesses if a["resource_type"] == "Communication"]
    assert all(a["phi_categories"] == ["contact"] for a in reads)
    about_patient = [a for a in reads if a["patient_id"] == patient]
    assert {(a["actor_id"], a["outcome"]) for a in about_patient} == {
        (f"portal-{patient}", "success"),
        (f"portal-{intruder_id}", "denied"),
    }
    assert any(a["resource_id"] == item["id"] for a in about_patient)


async def test_staff_read_a_patients_inbox_only_at_their_locations(api: ApiRig) -> None:
    patient = f"pat-{uuid.uuid4().hex[:8]}"
    at_north, _ = await api.queue(Channel.PORTAL, address="portal", patient_id=patient)
    at_south, _ = await api.queue(
        Channel.PORTAL, address="portal", patient_id=patient, location_id=SOUTH
    )
    await api.wait_sent(at_north)
    await api.wait_sent(at_south)
    (north_item,) = await api.inbox_rows(at_north)
    (south_item,) = await api.inbox_rows(at_south)

    provider = api.headers(roles=["provider"], loc=[NORTH])
    listed = await api.http.get(f"/patients/{patient}/inbox", headers=provider)
    assert listed.status_code == 200, listed.text
    assert [i["id"] for i in listed.json()["items"]] == [north_item["id"]]
    read = await api.http.get(f"/inbox/{north_item['id']}", headers=provider)
    assert read.status_code == 200
    assert read.json()["read_at"] is None  # staff reading it is not the patient reading it
    outside = await api.http.get(f"/inbox/{south_item['id']}", headers=provider)
    assert outside.status_code == 403

    everywhere = await api.http.get(f"/patients/{patient}/inbox", headers=api.headers())
    assert everywhere.json()["count"] == 2
    no_mfa = api.headers(roles=["provider"], loc=[NORTH], amr=["pwd"])
    assert (await api.http.get(f"/patients/{patient}/inbox", headers=no_mfa)).status_code == 403
    front_desk = api.headers(roles=["front_desk"], loc=[NORTH])
    assert (await api.http.get(f"/patients/{patient}/inbox", headers=front_desk)).status_code == 403
    stranger = api.headers(org=f"other-{uuid.uuid4().hex[:8]}")
    assert (await api.http.get(f"/inbox/{north_item['id']}", headers=stranger)).status_code == 404
    assert (await api.http.get(f"/patients/{patient}/inbox", headers=stranger)).json()[
        "items"
    ] == []
    assert (await api.http.get("/inbox", headers=provider)).status_code == 403


async def test_a_sensitive_locations_messages_are_only_for_its_own_staff(api: ApiRig) -> None:
    patient = f"pat-{uuid.uuid4().hex[:8]}"
    plain, _ = await api.queue(Channel.PORTAL, address="portal", patient_id=patient)
    hidden, _ = await api.queue(
        Channel.PORTAL, address="portal", patient_id=patient, location_id=SOUTH, sensitive=True
    )
    await api.wait_sent(plain)
    await api.wait_sent(hidden)
    (plain_item,) = await api.inbox_rows(plain)
    (hidden_item,) = await api.inbox_rows(hidden)
    assert (plain_item["sensitive_location"], hidden_item["sensitive_location"]) == (False, True)

    org_wide = api.headers()  # an org admin of every location
    elsewhere = api.headers(roles=["provider"], loc=[NORTH])
    its_own = api.headers(roles=["provider"], loc=[SOUTH])

    def ids(response: httpx.Response) -> list[str]:
        assert response.status_code == 200, response.text
        return [i["id"] for i in response.json()["items"]]

    listing = f"/patients/{patient}/inbox"
    assert ids(await api.http.get(listing, headers=org_wide)) == [plain_item["id"]]
    assert ids(await api.http.get(listing, headers=elsewhere)) == [plain_item["id"]]
    assert ids(await api.http.get(listing, headers=its_own)) == [hidden_item["id"]]
    # The patient reads its own messages wherever they come from.
    assert set(ids(await api.http.get("/inbox", headers=api.patient(patient)))) == {
        hidden_item["id"],
        plain_item["id"],
    }
    for refused in (org_wide, elsewhere):
        read = await api.http.get(f"/inbox/{hidden_item['id']}", headers=refused)
        assert read.status_code == 403
        assert read.headers["content-type"].startswith(PROBLEM)
    assert (await api.http.get(f"/inbox/{hidden_item['id']}", headers=its_own)).status_code == 200
