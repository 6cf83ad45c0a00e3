"""The outbound reminder chain end to end: a `ReminderDue` on the scheduling topic ->
messaging reads the patient's contact data from the real patients service with its own
service identity (token from identity, signed by its Vault key) -> the SMS reaches the
Twilio double, the email the local SMTP server, with no PHI in either (must-show 2).

Identity, patients, messaging and the Twilio double run on real ports.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import hvac
import pytest

import careloop_identity
import careloop_messaging
import careloop_patients
from careloop_identity.app import create_app as create_identity
from careloop_identity.settings import IdentitySettings
from careloop_kit.auth import totp
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.infra.ports import free_port
from careloop_kit.testing.apps import running_app, serve_in_task
from careloop_kit.testing.kafka import header, wait_for_records
from careloop_messaging.app import create_app as create_messaging
from careloop_messaging.settings import MessagingSettings
from careloop_messaging.testing.rig import (
    SmtpCollector,
    email_texts,
    publish,
    reminder_due,
    smtp_server,
)
from careloop_messaging.testing.twilio_double import TwilioDouble
from careloop_patients.app import create_app as create_patients
from careloop_patients.settings import PatientsSettings

pytestmark = pytest.mark.e2e

BOOTSTRAP = {"X-Bootstrap-Token": "e2e-messaging-bootstrap"}
PASSWORD = "correct-Horse-42-battery"

# Distinctive synthetic PHI: none of it may appear in anything sent over SMS or email.
FAMILY, GIVEN = "Quenneville-Ostrander", "Philippa"
BIRTH_DATE = "1967-11-23"
PROVIDER_NAME = "Dr. Barnaby Illingworth"
VISIT_TYPE = "Colposcopy follow-up"
PHI_MARKERS = (
    FAMILY,
    GIVEN,
    BIRTH_DATE,
    "11/23/1967",
    "23/11/1967",
    PROVIDER_NAME,
    "Illingworth",
    VISIT_TYPE,
    "Colposcopy",
)


@dataclass
class Chain:
    identity_url: str
    patients: httpx.AsyncClient
    messaging_settings: MessagingSettings
    double: TwilioDouble
    mail: SmtpCollector
    messaging: httpx.AsyncClient
    vault_tokens: dict[str, str]


@pytest.fixture
async def chain(
    make_database: Callable[[str], Awaitable[str]],
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    vault_root_token: str,
    topic_prefix: str,
    unique_id: str,
) -> AsyncIterator[Chain]:
    packages = {
        "identity": careloop_identity,
        "patients": careloop_patients,
        "messaging": careloop_messaging,
    }
    dsns = {name: await make_database(name) for name in packages}
    for name, package in packages.items():
        await upgrade_async(Path(package.__file__).parent / "migrations", dsns[name])
    key_path = f"careloop/messaging/recipient-key-{unique_id}"
    hvac.Client(url=vault_addr, token=vault_root_token).secrets.kv.v2.create_or_update_secret(
        path=key_path,
        secret={"key": base64.b64encode(secrets.token_bytes(32)).decode()},
        mount_point="secret",
    )
    common: dict[str, Any] = {
        "environment": "test",
        "kafka_bootstrap": kafka_bootstrap,
        "vault_addr": vault_addr,
        "topic_prefix": topic_prefix,
        "log_json": False,
    }
    double = TwilioDouble("AC" + secrets.token_hex(16), "test-" + secrets.token_hex(16))
    identity_app = create_identity(
        IdentitySettings(
            database_url=dsns["identity"],
            vault_token=vault_tokens["identity"],
            bootstrap_token=BOOTSTRAP["X-Bootstrap-Token"],
            **common,
        )
    )
    patients_port = free_port()
    with smtp_server() as (mail, smtp_port):
        async with (
            serve_in_task(identity_app) as identity_url,
            serve_in_task(double.app) as twilio_url,
        ):
            patients_app = create_patients(
                PatientsSettings(
                    database_url=dsns["patients"],
                    vault_token=vault_tokens["patients"],
                    auth_jwks_url=f"{identity_url}/.well-known/jwks.json",
                    **common,
                )
            )
            messaging_settings = MessagingSettings(
                database_url=dsns["messaging"],
                vault_token=vault_tokens["messaging"],
                delivery_mode="provider",
                patients_url=f"http://127.0.0.1:{patients_port}",
                identity_token_url=f"{identity_url}/oauth/token",
                recipient_key_secret_path=key_path,
                twilio_api_base=twilio_url,
                twilio_account_sid=double.account_sid,
                twilio_auth_token=double.auth_token,
                twilio_from_number="+15550009999",
                smtp_host="127.0.0.1",
                smtp_port=smtp_port,
                smtp_security="none",
                secure_link_base="https://portal.example.test/m",
                delivery_poll_interval_s=0.05,
                **common,
            )
            async with (
                serve_in_task(patients_app, port=patients_port) as patients_url,
                httpx.AsyncClient(base_url=patients_url) as patients,
                running_app(create_messaging(messaging_settings)) as messaging,
            ):
                yield Chain(
                    identity_url,
                    patients,
                    messaging_settings,
                    double,
                    mail,
                    messaging,
                    vault_tokens,
                )


async def admin_of_new_org(identity_url: str) -> tuple[str, dict[str, str]]:
    """(org id, bearer headers) of a new organization's first admin, signed in with a
    second factor (patients asks org admins for one)."""
    email = f"admin-{uuid.uuid4().hex[:8]}@example.org"
    # Password hashing (argon2id) is slow on a busy 2-core machine: more than the
    # client default of 5 s when other e2e tests run beside this one.
    async with httpx.AsyncClient(base_url=identity_url, timeout=30) as client:
        org = await client.post(
            "/organizations",
            json={
                "name": "Bayview (synthetic)",
                "admin": {"email": email, "display_name": "Admin", "password": PASSWORD},
            },
            headers=BOOTSTRAP,
        )
        assert org.status_code == 201, org.text
        credentials = {"org_id": org.json()["id"], "email": email, "password": PASSWORD}
        first = await client.post("/auth/login", json=credentials)
        assert first.status_code == 200, first.text
        bearer = {"Authorization": f"Bearer {first.json()['access_token']}"}
        enrolled = await client.post("/auth/mfa/enroll", headers=bearer)
        secret = totp.from_base32(enrolled.json()["secret"])
        now = datetime.now(UTC)
        verified = await client.post(
            "/auth/mfa/verify", json={"code": totp.totp(secret, now)}, headers=bearer
        )
        assert verified.status_code == 200, verified.text
        next_code = totp.totp(secret, now + timedelta(seconds=totp.STEP_S))
        signed_in = await client.post("/auth/login", json={**credentials, "otp": next_code})
        assert signed_in.status_code == 200, signed_in.text
    return org.json()["id"], {"Authorization": f"Bearer {signed_in.json()['access_token']}"}


async def register(chain: Chain, admin: dict[str, str], **preferences: Any) -> str:
    created = await chain.patients.post(
        "/patients",
        json={
            "location_id": "loc-north",
            "name": {"family": FAMILY, "given": [GIVEN]},
            "birth_date": BIRTH_DATE,
            "sex": "female",
            "phones": ["+1 555 0100 777"],
            "emails": [f"{uuid.uuid4().hex[:8]}@example.org"],
            "preferred_language": "en",
            "preferences": preferences,
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def eventually(check: Callable[[], bool], *, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def texts_recorded_as_sent(chain: Chain) -> None:
    """Wait until messaging has committed every text the double accepted as sent.

    A patient answers a text after their phone got it, so after the provider's answer
    reached messaging; a test that replies the moment the double holds the text would
    race that commit, and its reply would answer the text before."""
    texted = len(chain.double.messages)
    await wait_for_records(
        chain.messaging_settings.kafka_bootstrap,
        f"{chain.messaging_settings.topic_prefix}careloop.messaging",
        lambda records: (
            sum(
                header(r, "ce_type") == "careloop.messaging.message.sent.v1"
                and json.loads(r.value)["channel"] == "sms"
                for r in records
            )
            >= texted
        ),
        timeout_s=30,
    )


async def test_a_reminder_reaches_the_patient_by_sms_and_email_without_phi(
    chain: Chain,
) -> None:
    org_id, admin = await admin_of_new_org(chain.identity_url)
    by_sms = await register(chain, admin, allowed_channels=["sms"], preferred_channel="sms")
    by_email = await register(chain, admin, allowed_channels=["email"], preferred_channel="email")

    await publish(
        chain.messaging_settings,
        reminder_due(org_id=org_id, patient_id=by_sms, appointment_id="appt-sms"),
        reminder_due(
            org_id=org_id, patient_id=by_email, appointment_id="appt-email", touch="confirmation"
        ),
    )
    await eventually(lambda: len(chain.double.messages) == 1 and len(chain.mail.messages) == 1)

    (sms,) = chain.double.messages
    assert sms.to == "+15550100777"
    assert sms.body.startswith("Bayview Family Practice: reminder of your appointment on")
    assert "Tue Mar 4 at 9:30 AM" in sms.body
    assert "https://portal.example.test/m/" in sms.body
    (mail,) = chain.mail.messages
    assert mail["Subject"] == "Appointment confirmation from Bayview Family Practice"

    # Must-show 2: nothing sent over an insecure channel carries the patient's identity
    # or the kind of care.
    sent_texts = [m.body for m in chain.double.messages] + [
        text for m in chain.mail.messages for text in email_texts(m)
    ]
    for text in sent_texts:
        for marker in PHI_MARKERS:
            assert marker.lower() not in text.lower(), f"{marker!r} leaked into a message"


async def test_a_patient_who_refuses_automated_messages_gets_none(chain: Chain) -> None:
    org_id, admin = await admin_of_new_org(chain.identity_url)
    quiet = await register(chain, admin, allow_automated_messages=False)
    reachable = await register(chain, admin, allowed_channels=["sms"])

    await publish(
        chain.messaging_settings,
        reminder_due(org_id=org_id, patient_id=quiet, appointment_id="appt-quiet"),
        reminder_due(org_id=org_id, patient_id=reachable, appointment_id="appt-ok"),
    )

    # Same partition order is not guaranteed across patients: wait for the reachable
    # one, then give the other the same time.
    await eventually(lambda: len(chain.double.messages) == 1)
    await asyncio.sleep(1.0)
    assert len(chain.double.messages) == 1
