"""The outcome report goes back to the referring provider by secure email (a real SMTP
server stands in for the relay): sent once the patient was seen, the loop closed when the
relay accepts it, a transient refusal retried with a growing delay until the attempts
run out, a permanent one failed at once; the subject names no patient or condition, and
the disclosure is audited."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI

from careloop_contracts import prefixed
from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import FrozenClock
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.kafka import header, read_topic, wait_for_records
from careloop_kit.testing.services import Mint
from careloop_kit.testing.smtp import SmtpCollector, email_texts, smtp_server
from careloop_referrals.app import create_app
from careloop_referrals.handlers.clocks import clock_worker
from careloop_referrals.settings import ReferralsSettings

from .test_referrals_api import VALID_NPIS, _directory_entry, _move, _referral

pytestmark = pytest.mark.service

NOTE = "Synthetic outcome: marker-OUT-93 seen, follow up in six weeks."
ACCESS = "careloop.audit.access.recorded.v1"


@pytest.fixture
def relay() -> Iterator[tuple[SmtpCollector, int]]:
    with smtp_server() as server:
        yield server


@pytest.fixture
async def reporting(
    referrals_settings: ReferralsSettings,
    issuer: TestTokenIssuer,
    clock: FrozenClock,
    relay: tuple[SmtpCollector, int],
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The service delivering reports through the local relay, two attempts at most."""
    settings = referrals_settings.model_copy(
        update={
            "report_delivery_mode": "provider",
            "smtp_host": "127.0.0.1",
            "smtp_port": relay[1],
            "smtp_security": "none",
            "report_max_attempts": 2,
            "report_retry_base_s": 60.0,
        }
    )
    app = create_app(settings, clock=clock, jwks=StaticJwksSource(issuer.jwks_document()))
    async with running_app(app) as client:
        yield client, app


async def _seen(client: httpx.AsyncClient, mint: Mint, referrer: str) -> str:
    created = await _referral(client, mint(), referrer)
    for to, more in (("triaged", {}), ("scheduled", {"appointment_id": "apt-out"}), ("seen", {})):
        moved = await _move(client, mint(), created["id"], to, **more)
        assert moved.status_code == 200, moved.text
    return str(created["id"])


async def test_the_report_reaches_the_referrer_and_closes_the_loop(
    reporting: tuple[httpx.AsyncClient, FastAPI],
    relay: tuple[SmtpCollector, int],
    referrals_settings: ReferralsSettings,
    mint: Mint,
    clock: FrozenClock,
    topic_prefix: str,
) -> None:
    client, app = reporting
    mail, _ = relay
    worker = clock_worker(app.state.runtime)
    referrer = await _directory_entry(
        client, mint(), VALID_NPIS[0], contact={"email": "dr-referrer@clinic.example"}
    )
    rid = await _seen(client, mint, referrer)

    written = await client.post(f"/referrals/{rid}/outcome", json={"note": NOTE}, headers=mint())
    assert written.status_code == 202, written.text
    assert written.json()["outcome"]["status"] == "pending"
    assert written.json()["stage"] == "seen"

    assert await worker.fire_due() == 1
    [message] = mail.messages
    assert mail.envelopes[0].rcpt_tos == ["dr-referrer@clinic.example"]
    assert message["Subject"] == f"Referral outcome report {rid}"
    assert "marker-OUT-93" in message.get_content()
    assert "marker-OUT-93" not in str(message["Subject"])
    assert all("pat-1" not in text for text in email_texts(message))

    read = (await client.get(f"/referrals/{rid}", headers=mint())).json()
    assert read["stage"] == "outcome-reported"
    assert read["history"][-1]["actor"] == "service:referrals"
    assert (read["outcome"]["status"], read["outcome"]["note"]) == ("sent", NOTE)

    again = await client.post(f"/referrals/{rid}/outcome", json={"note": NOTE}, headers=mint())
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")

    topic = prefixed("careloop.referrals", topic_prefix)
    await wait_for_records(
        referrals_settings.kafka_bootstrap,
        topic,
        lambda rs: any(
            header(r, "ce_type") == ACCESS and json.loads(r.value)["action"] == "export" for r in rs
        ),
    )
    exports = [
        json.loads(r.value)
        for r in await read_topic(referrals_settings.kafka_bootstrap, topic)
        if header(r, "ce_type") == ACCESS and json.loads(r.value)["action"] == "export"
    ]
    assert [(e["resource_id"], e["actor_type"]) for e in exports] == [(rid, "system")]


async def test_transient_refusals_are_retried_then_failed_and_permanent_ones_fail_at_once(
    reporting: tuple[httpx.AsyncClient, FastAPI],
    relay: tuple[SmtpCollector, int],
    mint: Mint,
    clock: FrozenClock,
) -> None:
    client, app = reporting
    mail, _ = relay
    worker = clock_worker(app.state.runtime)
    greylisted = await _directory_entry(
        client, mint(), VALID_NPIS[0], contact={"email": "greylisted-dr@clinic.example"}
    )
    unknown = await _directory_entry(
        client, mint(), VALID_NPIS[1], contact={"email": "nobody-dr@clinic.example"}
    )
    later, never = await _seen(client, mint, greylisted), await _seen(client, mint, unknown)
    for rid in (later, never):
        written = await client.post(
            f"/referrals/{rid}/outcome", json={"note": NOTE}, headers=mint()
        )
        assert written.status_code == 202, written.text

    assert await worker.fire_due() == 2

    async def outcome(rid: str) -> dict[str, object]:
        body = (await client.get(f"/referrals/{rid}", headers=mint())).json()
        assert body["stage"] == "seen"
        result: dict[str, object] = body["outcome"]
        return result

    assert (await outcome(later))["status"] == "pending"
    assert (await outcome(later))["last_error"] == "SMTP recipient refused (450)"
    assert (await outcome(never))["status"] == "failed"
    assert (await outcome(never))["attempts"] == 1

    assert await worker.fire_due() == 0  # the second attempt waits a minute
    clock.advance(timedelta(seconds=61))
    assert await worker.fire_due() == 1
    failed = await outcome(later)
    assert (failed["status"], failed["attempts"]) == ("failed", 2)
    clock.advance(timedelta(hours=3))
    assert await worker.fire_due() >= 0
    assert (await outcome(later))["attempts"] == 2
    assert mail.messages == []

    # A failed report may be written again once the directory is right.
    fixed = await client.patch(
        f"/referrals/directory/{unknown}",
        json={"contact": {"email": "dr-fixed@clinic.example"}},
        headers=mint(),
    )
    assert fixed.status_code == 200, fixed.text
    resent = await client.post(f"/referrals/{never}/outcome", json={"note": NOTE}, headers=mint())
    assert resent.status_code == 202, resent.text
    assert await worker.fire_due() >= 1
    assert (await client.get(f"/referrals/{never}", headers=mint())).json()[
        "stage"
    ] == "outcome-reported"
    assert [m["To"] for m in mail.messages] == ["dr-fixed@clinic.example"]


async def test_an_outbound_or_unseen_referral_takes_no_report(
    referrals: httpx.AsyncClient, mint: Mint
) -> None:
    referrer = await _directory_entry(referrals, mint(), VALID_NPIS[0])
    created = await _referral(referrals, mint(), referrer)
    early = await referrals.post(
        f"/referrals/{created['id']}/outcome", json={"note": NOTE}, headers=mint()
    )
    assert early.status_code == 409
    assert "seen" in early.json()["detail"]
    outbound = await referrals.post(
        "/referrals",
        json={
            "location_id": "loc-north",
            "patient_id": "pat-1",
            "direction": "outbound",
            "referring_provider_id": referrer,
        },
        headers=mint(),
    )
    assert outbound.status_code == 201, outbound.text
    refused = await referrals.post(
        f"/referrals/{outbound.json()['id']}/outcome", json={"note": NOTE}, headers=mint()
    )
    assert refused.status_code == 409
    assert "outside specialist" in refused.json()["detail"]
