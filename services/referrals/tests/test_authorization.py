"""Prior authorization through the API: the payer's answers move the referral waiting on
them, the number is sealed at rest, visits are counted once per attended appointment,
and the coordinator hears before the approval runs out or when its visits are used."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from careloop_contracts import prefixed
from careloop_contracts.scheduling import AppointmentCheckedIn
from careloop_kit.clock import FrozenClock
from careloop_kit.service import Runtime
from careloop_kit.testing.kafka import header, read_topic, wait_for_records
from careloop_kit.testing.services import Mint
from careloop_referrals.handlers.clocks import clock_worker
from careloop_referrals.settings import ReferralsSettings

from .test_appointment_events import _publish, _snapshot, _until
from .test_referrals_api import VALID_NPIS, _directory_entry, _move, _referral

pytestmark = pytest.mark.service

RECORDED = "careloop.referrals.authorization.recorded.v1"
EXPIRING = "careloop.referrals.authorization.expiring.v1"
NUMBER = "AUTH-SYNTH-4821"


async def _authorize(
    client: httpx.AsyncClient, headers: dict[str, str], referral_id: object, **body: object
) -> httpx.Response:
    return await client.put(
        f"/referrals/{referral_id}/authorization",
        json={"payer": "Synthetic Health Plan", **body},
        headers=headers,
    )


async def test_an_authorization_moves_the_referral_counts_visits_and_reminds(
    referrals: httpx.AsyncClient,
    referrals_app: FastAPI,
    referrals_settings: ReferralsSettings,
    mint: Mint,
    clock: FrozenClock,
    unique_id: str,
    topic_prefix: str,
) -> None:
    runtime: Runtime = referrals_app.state.runtime
    org_id = f"org-{unique_id}"
    referrer = await _directory_entry(referrals, mint(), VALID_NPIS[0])
    created = await _referral(referrals, mint(), referrer)
    rid = created["id"]
    await _move(referrals, mint(), rid, "triaged")

    early = await _authorize(referrals, mint(), rid, status="approved")
    assert early.status_code == 409
    assert early.headers["content-type"].startswith("application/problem+json")
    assert "requested" in early.json()["detail"]

    asked = await _authorize(referrals, mint(), rid, status="requested", number=NUMBER)
    assert asked.status_code == 200, asked.text
    assert asked.json()["stage"] == "authorization-pending"
    assert asked.json()["authorization"]["version"] == 1

    stale = await _authorize(referrals, mint(), rid, status="approved", version=7)
    assert stale.status_code == 409
    assert stale.json()["current_version"] == 1

    expires = clock.now() + timedelta(days=30)
    approved = await _authorize(
        referrals,
        mint(),
        rid,
        status="approved",
        approved_visits=1,
        expires_at=expires.isoformat(),
        version=1,
    )
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["stage"] == "authorized"
    auth = body["authorization"]
    assert (auth["status"], auth["number"], auth["visits_left"]) == ("approved", NUMBER, 1)
    assert [h["to_stage"] for h in body["history"]][-2:] == ["authorization-pending", "authorized"]

    # Two arrivals of one appointment (a corrected check-in has a new event id) are one
    # visit; the referral is seen and the approval's only visit is used.
    await _move(referrals, mint(), rid, "scheduled", appointment_id="apt-auth")
    for _ in range(2):
        arrival = AppointmentCheckedIn(**_snapshot(org_id, "apt-auth", "arrived"))
        await _publish(runtime, arrival, str(uuid.uuid4()))
    seen = await _until(referrals, mint, rid, lambda b: b["authorization"]["visits_used"] >= 1)
    assert seen["stage"] == "seen"

    # 16 days before expiry is outside the 14-day lead; 17 days on it is inside.
    worker = clock_worker(runtime)
    start = clock.now()
    clock.advance(timedelta(days=15))
    await worker.fire_due()
    clock.advance(timedelta(days=2))
    assert clock.now() - start == timedelta(days=17)
    await worker.fire_due()
    await worker.fire_due()

    topic = prefixed("careloop.referrals", topic_prefix)
    await wait_for_records(
        referrals_settings.kafka_bootstrap,
        topic,
        lambda rs: sum(1 for r in rs if header(r, "ce_type") == EXPIRING) >= 2,
    )
    records = [
        r
        for r in await read_topic(referrals_settings.kafka_bootstrap, topic)
        if header(r, "ce_subject") == rid and header(r, "ce_type") in (RECORDED, EXPIRING)
    ]
    kinds = [header(r, "ce_type") for r in records]
    assert kinds.count(RECORDED) == 3  # requested, approved, one visit used
    notices = {
        body["cause"]: body
        for body in (json.loads(r.value) for r in records if header(r, "ce_type") == EXPIRING)
    }
    assert sorted(notices) == ["expiry-near", "visits-used-up"]
    # Not at day 15 (16 days before expiry), at day 17, the first scan inside the lead.
    assert notices["expiry-near"]["occurred_at"] == "2026-03-19T09:00:00Z"
    assert all(NUMBER.encode() not in r.value for r in records)

    final = (await referrals.get(f"/referrals/{rid}", headers=mint())).json()
    assert final["authorization"]["visits_used"] == 1

    engine = create_async_engine(referrals_settings.database_url.get_secret_value())
    try:
        async with engine.connect() as connection:
            blob = await connection.scalar(
                text("SELECT number_ct FROM referral_authorization WHERE referral_id = :id"),
                {"id": rid},
            )
            visits = await connection.scalar(
                text("SELECT count(*) FROM authorization_visit WHERE referral_id = :id"),
                {"id": rid},
            )
    finally:
        await engine.dispose()
    assert blob is not None
    assert NUMBER.encode() not in bytes(blob)
    assert visits == 1


async def test_a_denial_needs_a_reason_and_a_finished_referral_takes_none(
    referrals: httpx.AsyncClient, mint: Mint
) -> None:
    referrer = await _directory_entry(referrals, mint(), VALID_NPIS[1])
    created = await _referral(referrals, mint(), referrer)
    rid = created["id"]
    await _move(referrals, mint(), rid, "triaged")
    await _authorize(referrals, mint(), rid, status="requested")

    unexplained = await _authorize(referrals, mint(), rid, status="denied", version=1)
    assert unexplained.status_code == 422
    denied = await _authorize(
        referrals, mint(), rid, status="denied", version=1, reason="Not covered: synthetic"
    )
    assert denied.status_code == 200, denied.text
    assert denied.json()["stage"] == "denied"
    assert denied.json()["history"][-1]["reason"] == "Not covered: synthetic"

    await _move(referrals, mint(), rid, "cancelled", reason="Patient chose another clinic")
    late = await _authorize(referrals, mint(), rid, status="requested", version=2)
    assert late.status_code == 409
    assert "finished" in late.json()["detail"]
