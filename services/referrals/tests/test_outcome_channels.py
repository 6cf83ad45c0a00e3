"""Outcome reports by Direct and by fax, against doubles that speak each protocol: a HISP
(an SMTP server that decrypts the S/MIME envelope with the recipient's key and verifies
the signature against the practice's certificate) and Phaxio's v2.1 API (HTTP Basic
auth, multipart upload, Phaxio's answers). The sender's Direct key and the fax API
credentials are read from Vault; every key and certificate is made here, at test time.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import hvac
import pytest
from fastapi import FastAPI

from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import FrozenClock
from careloop_kit.smime import SmimeIdentity, smime_identity
from careloop_kit.testing.apps import running_app, serve_in_task
from careloop_kit.testing.services import Mint
from careloop_kit.testing.smtp import HispCollector, smtp_server
from careloop_referrals.app import create_app
from careloop_referrals.handlers.clocks import clock_worker
from careloop_referrals.settings import ReferralsSettings
from careloop_referrals.testing.phaxio_double import PhaxioDouble, pdf_text

from .test_outcome_report import _seen
from .test_referrals_api import VALID_NPIS, _directory_entry

pytestmark = pytest.mark.service

NOTE = "Synthetic outcome: marker-DIR-57 seen, repeat the echo in a year."
SENDER = "referrals@direct.practice.example"
RECIPIENT = "dr-referrer@direct.clinic.example"
FAX = "+1 555 0142"
ISSUED = datetime(2025, 6, 1, tzinfo=UTC)


@dataclass
class Rig:
    client: httpx.AsyncClient
    app: FastAPI
    hisp: HispCollector
    phaxio: PhaxioDouble
    sender: SmimeIdentity
    recipient: SmimeIdentity
    direct_path: str
    fax_path: str

    async def fire(self) -> int:
        fired: int = await clock_worker(self.app.state.runtime).fire_due()
        return fired


@pytest.fixture(scope="module")
def identities() -> tuple[SmimeIdentity, SmimeIdentity]:
    """The practice's Direct identity and the referring provider's (RSA keys are slow
    to make: once for the module), valid around the tests' frozen clock."""
    return smime_identity(SENDER, valid_from=ISSUED), smime_identity(RECIPIENT, valid_from=ISSUED)


@pytest.fixture
def hisp(identities: tuple[SmimeIdentity, SmimeIdentity]) -> Iterator[tuple[HispCollector, int]]:
    sender, recipient = identities
    collector = HispCollector(mailboxes={RECIPIENT: recipient}, trusted=[sender.certificate])
    with smtp_server(collector) as (_, port):
        yield collector, port


@pytest.fixture
async def rig(
    referrals_settings: ReferralsSettings,
    issuer: TestTokenIssuer,
    clock: FrozenClock,
    hisp: tuple[HispCollector, int],
    identities: tuple[SmimeIdentity, SmimeIdentity],
    vault_addr: str,
    vault_root_token: str,
    unique_id: str,
) -> AsyncIterator[Rig]:
    """The service delivering through the HISP and the fax doubles, three attempts at
    most, its credentials at this test's own Vault paths."""
    sender, recipient = identities
    phaxio = PhaxioDouble(api_key=f"key-{unique_id}", api_secret=f"secret-{unique_id}")
    direct_path = f"careloop/referrals/direct-{unique_id}"
    fax_path = f"careloop/referrals/fax-{unique_id}"
    kv = hvac.Client(url=vault_addr, token=vault_root_token).secrets.kv.v2
    kv.create_or_update_secret(
        path=direct_path,
        secret={"key": sender.key_pem, "certificate": sender.certificate_pem},
        mount_point="secret",
    )
    kv.create_or_update_secret(
        path=fax_path,
        secret={"api_key": phaxio.api_key, "api_secret": phaxio.api_secret},
        mount_point="secret",
    )
    async with serve_in_task(phaxio.app) as fax_url:
        settings = referrals_settings.model_copy(
            update={
                "report_delivery_mode": "provider",
                "direct_relay_host": "127.0.0.1",
                "direct_relay_port": hisp[1],
                "direct_relay_security": "none",
                "direct_from_address": SENDER,
                "direct_sender_secret_path": direct_path,
                "fax_api_base_url": f"{fax_url}/v2.1",
                "fax_credentials_secret_path": fax_path,
                "practice_display_name": "Synthetic Cardiology",
                "report_max_attempts": 3,
                "report_retry_base_s": 60.0,
            }
        )
        app = create_app(settings, clock=clock, jwks=StaticJwksSource(issuer.jwks_document()))
        async with running_app(app) as client:
            yield Rig(client, app, hisp[0], phaxio, sender, recipient, direct_path, fax_path)


async def _direct_entry(rig: Rig, mint: Mint, npi: str, **contact: object) -> str:
    entry: str = await _directory_entry(
        rig.client,
        mint(),
        npi,
        contact={"direct_address": RECIPIENT, **contact},
        preferred_channel="direct",
    )
    return entry


async def _write(rig: Rig, mint: Mint, rid: str) -> httpx.Response:
    return await rig.client.post(f"/referrals/{rid}/outcome", json={"note": NOTE}, headers=mint())


async def _referral(rig: Rig, mint: Mint, rid: str) -> dict[str, object]:
    body: dict[str, object] = (await rig.client.get(f"/referrals/{rid}", headers=mint())).json()
    return body


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


async def test_a_direct_report_arrives_signed_and_encrypted_and_closes_the_loop(
    rig: Rig, mint: Mint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    referrer = await _direct_entry(
        rig, mint, VALID_NPIS[0], direct_certificate=rig.recipient.certificate_pem
    )
    rid = await _seen(rig.client, mint, referrer)

    written = await _write(rig, mint, rid)
    assert written.status_code == 202, written.text
    assert await rig.fire() == 1

    [message] = rig.hisp.messages
    assert rig.hisp.envelopes[0].rcpt_tos == [RECIPIENT]
    assert (message["From"], message["To"]) == (SENDER, RECIPIENT)
    assert message["Subject"] == f"Referral outcome report {rid}"
    assert message.get_content_type() == "application/pkcs7-mime"
    # Only the envelope travels: the note is nowhere in what the relays see.
    assert "marker-DIR-57" not in message.as_string()
    [opened] = rig.hisp.opened
    assert opened.signer == rig.sender.certificate
    assert opened.content.get_content_type() == "text/plain"
    assert "marker-DIR-57" in opened.text
    assert f"Outcome of your referral {rid}" in opened.text

    read = await _referral(rig, mint, rid)
    assert read["stage"] == "outcome-reported"
    outcome = read["outcome"]
    assert isinstance(outcome, dict)
    assert (outcome["status"], outcome["channel"]) == ("sent", "direct")
    logged = _logged(caplog)
    assert "marker-DIR-57" not in logged
    assert RECIPIENT not in logged


async def test_a_direct_provider_without_a_certificate_is_refused_and_a_removed_one_fails(
    rig: Rig, mint: Mint
) -> None:
    referrer = await _direct_entry(rig, mint, VALID_NPIS[0])
    rid = await _seen(rig.client, mint, referrer)

    refused = await _write(rig, mint, rid)
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "`direct_certificate`" in refused.json()["detail"]

    contact = {"direct_address": RECIPIENT, "direct_certificate": rig.recipient.certificate_pem}
    added = await rig.client.patch(
        f"/referrals/directory/{referrer}", json={"contact": contact}, headers=mint()
    )
    assert added.status_code == 200, added.text
    assert (await _write(rig, mint, rid)).status_code == 202
    # The certificate goes away before the attempt: no retry could deliver the report.
    removed = await rig.client.patch(
        f"/referrals/directory/{referrer}",
        json={"contact": {"direct_address": RECIPIENT}},
        headers=mint(),
    )
    assert removed.status_code == 200, removed.text
    assert await rig.fire() == 1

    outcome = (await _referral(rig, mint, rid))["outcome"]
    assert isinstance(outcome, dict)
    assert (outcome["status"], outcome["attempts"]) == ("failed", 1)
    assert "`direct_certificate`" in str(outcome["last_error"])
    assert rig.hisp.messages == []


async def test_missing_sender_credentials_fail_the_report_naming_the_vault_path(
    rig: Rig, mint: Mint, vault_addr: str, vault_root_token: str
) -> None:
    hvac.Client(
        url=vault_addr, token=vault_root_token
    ).secrets.kv.v2.delete_metadata_and_all_versions(path=rig.direct_path, mount_point="secret")
    referrer = await _direct_entry(
        rig, mint, VALID_NPIS[0], direct_certificate=rig.recipient.certificate_pem
    )
    rid = await _seen(rig.client, mint, referrer)
    assert (await _write(rig, mint, rid)).status_code == 202
    assert await rig.fire() == 1

    outcome = (await _referral(rig, mint, rid))["outcome"]
    assert isinstance(outcome, dict)
    assert outcome["status"] == "failed"
    assert f"secret/{rig.direct_path}" in str(outcome["last_error"])
    assert rig.hisp.messages == []


async def test_the_directory_refuses_a_certificate_it_cannot_encrypt_to(
    rig: Rig, mint: Mint
) -> None:
    someone_else = smime_identity("someone@direct.elsewhere.example", valid_from=ISSUED)
    weak = smime_identity(RECIPIENT, bits=1024, valid_from=ISSUED)
    cases = [
        ("not a certificate", "not a PEM X.509 certificate"),
        (someone_else.certificate_pem, f"not bound to {RECIPIENT}"),
        (weak.certificate_pem, "RSA key of 2048 bits"),
        (rig.recipient.certificate_pem * 2, "holds 2 certificates"),
    ]
    for pem, reason in cases:
        response = await rig.client.post(
            "/referrals/directory",
            json={
                "kind": "provider",
                "name": "Dr. Synthetic Direct",
                "contact": {"direct_address": RECIPIENT, "direct_certificate": pem},
                "preferred_channel": "direct",
            },
            headers=mint(),
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert reason in response.json()["detail"]
    local = await rig.client.post(
        "/referrals/directory",
        json={
            "kind": "organization",
            "name": "Fax Only",
            "contact": {"fax": "555 0142"},
            "preferred_channel": "fax",
        },
        headers=mint(),
    )
    assert local.status_code == 422
    assert "international form" in local.json()["detail"]


async def test_a_fax_report_reaches_the_provider_as_a_pdf_of_the_report(
    rig: Rig, mint: Mint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    referrer = await _directory_entry(
        rig.client, mint(), VALID_NPIS[0], contact={"fax": FAX}, preferred_channel="fax"
    )
    entry = (await rig.client.get(f"/referrals/directory/{referrer}", headers=mint())).json()
    assert entry["contact"]["fax"] == "+15550142"
    rid = await _seen(rig.client, mint, referrer)
    assert (await _write(rig, mint, rid)).status_code == 202
    assert await rig.fire() == 1

    [fax] = rig.phaxio.faxes
    expected = base64.b64encode(f"{rig.phaxio.api_key}:{rig.phaxio.api_secret}".encode())
    assert fax.authorization == f"Basic {expected.decode()}"
    assert fax.to == "+15550142"
    assert fax.header_text == "Synthetic Cardiology"
    [document] = fax.files
    assert document.content_type == "application/pdf"
    pages, text = pdf_text(document.data)
    assert pages == 1
    assert f"Referral outcome report {rid}" in text
    assert "marker-DIR-57" in text
    assert fax.tags["report"].startswith(f"outcome-{rid}-")

    read = await _referral(rig, mint, rid)
    assert read["stage"] == "outcome-reported"
    outcome = read["outcome"]
    assert isinstance(outcome, dict)
    assert outcome["status"] == "sent"
    logged = _logged(caplog)
    assert "marker-DIR-57" not in logged
    assert "5550142" not in logged


async def test_a_fax_api_5xx_is_retried_until_it_succeeds_and_a_4xx_fails_for_good(
    rig: Rig, mint: Mint, clock: FrozenClock
) -> None:
    referrer = await _directory_entry(
        rig.client, mint(), VALID_NPIS[0], contact={"fax": FAX}, preferred_channel="fax"
    )
    later = await _seen(rig.client, mint, referrer)
    rig.phaxio.fail_next(2, status=503)
    assert (await _write(rig, mint, later)).status_code == 202
    assert await rig.fire() == 1
    pending = (await _referral(rig, mint, later))["outcome"]
    assert isinstance(pending, dict)
    assert (pending["status"], pending["last_error"]) == ("pending", "fax API HTTP 503")
    clock.advance(timedelta(seconds=61))
    assert await rig.fire() == 1  # the second attempt meets the second 503
    assert await rig.fire() == 0  # the third waits twice as long
    clock.advance(timedelta(seconds=121))
    assert await rig.fire() == 1
    sent = await _referral(rig, mint, later)
    assert sent["stage"] == "outcome-reported"
    assert isinstance(sent["outcome"], dict)
    assert (sent["outcome"]["status"], sent["outcome"]["attempts"]) == ("sent", 3)
    assert rig.phaxio.requests == 3
    assert len(rig.phaxio.faxes) == 1

    never = await _seen(rig.client, mint, referrer)
    rig.phaxio.fail_next(1, status=422)
    assert (await _write(rig, mint, never)).status_code == 202
    assert await rig.fire() == 1
    failed = await _referral(rig, mint, never)
    assert failed["stage"] == "seen"
    outcome = failed["outcome"]
    assert isinstance(outcome, dict)
    assert (outcome["status"], outcome["attempts"]) == ("failed", 1)
    assert (
        outcome["last_error"] == "fax API HTTP 422: the request was refused (check the fax number)"
    )
    clock.advance(timedelta(hours=3))
    await rig.fire()
    assert len(rig.phaxio.faxes) == 1


async def test_a_certificate_the_recipients_hisp_has_no_key_for_fails_for_good(
    rig: Rig, mint: Mint
) -> None:
    # Valid and bound to the address, but not the one the recipient's HISP holds the key
    # of (a certificate they since replaced): their HISP refuses what it cannot decrypt.
    replaced = smime_identity(RECIPIENT, valid_from=ISSUED)
    referrer = await _direct_entry(
        rig, mint, VALID_NPIS[0], direct_certificate=replaced.certificate_pem
    )
    rid = await _seen(rig.client, mint, referrer)
    assert (await _write(rig, mint, rid)).status_code == 202
    assert await rig.fire() == 1

    outcome = (await _referral(rig, mint, rid))["outcome"]
    assert isinstance(outcome, dict)
    assert (outcome["status"], outcome["last_error"]) == ("failed", "SMTP 554")
    assert rig.hisp.messages == rig.hisp.opened == []
