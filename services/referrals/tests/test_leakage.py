"""Leakage of outbound referrals: never scheduled, scheduled elsewhere, no report back,
each published once, on its own, and only for a referral still where the watch found
it; inbound referrals never leak."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from careloop_contracts import prefixed
from careloop_kit.clock import FrozenClock
from careloop_kit.testing.kafka import header, read_topic, wait_for_records
from careloop_kit.testing.services import Mint
from careloop_referrals.domain.leakage import Leakage, leaked, leaked_now, watches
from careloop_referrals.domain.referral import Direction, Referral, Stage, Urgency
from careloop_referrals.handlers.clocks import clock_worker
from careloop_referrals.settings import ReferralsSettings

from .test_referrals_api import VALID_NPIS, _directory_entry, _move

LEAKED = "careloop.referrals.referral.leaked.v1"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _outbound(stage: Stage, **more: object) -> Referral:
    base = Referral(
        id="ref-1",
        org_id="org-1",
        location_id="loc-1",
        patient_id="pat-1",
        direction=Direction.OUTBOUND,
        urgency=Urgency.ROUTINE,
        referring_provider_id="dir-1",
        receiving_provider_id="dir-2",
        stage=stage,
        stage_entered_at=T0,
        created_at=T0,
    )
    return replace(base, **more)  # type: ignore[arg-type]


@pytest.mark.unit
def test_each_leaking_stage_sets_its_own_watch() -> None:
    [sent] = watches(_outbound(Stage.RECEIVED))
    assert (sent.leakage, sent.due) == (Leakage.NEVER_SCHEDULED, T0 + timedelta(days=30))
    [seen] = watches(_outbound(Stage.SEEN, urgency=Urgency.STAT))
    assert (seen.leakage, seen.due) == (Leakage.NO_REPORT_BACK, T0 + timedelta(days=3))
    assert watches(_outbound(Stage.SCHEDULED)) == []
    assert watches(_outbound(Stage.RECEIVED, direction=Direction.INBOUND)) == []


@pytest.mark.unit
@pytest.mark.parametrize(
    ("stage", "leakage", "version", "expected"),
    [
        (Stage.PATIENT_CONTACTED, Leakage.NEVER_SCHEDULED, 1, True),
        (Stage.SCHEDULED, Leakage.NEVER_SCHEDULED, 1, False),
        (Stage.CANCELLED, Leakage.NEVER_SCHEDULED, 1, False),
        (Stage.SEEN, Leakage.NO_REPORT_BACK, 1, True),
        (Stage.SEEN, Leakage.NO_REPORT_BACK, 2, False),  # seen again since: a new watch
        (Stage.CLOSED, Leakage.NO_REPORT_BACK, 1, False),
    ],
)
def test_a_watch_finds_leakage_only_where_it_left_the_referral(
    stage: Stage, leakage: Leakage, version: int, expected: bool
) -> None:
    assert leaked(_outbound(stage), leakage, watched_version=version) is expected


@pytest.mark.unit
def test_a_redirect_of_an_outbound_referral_is_leakage_at_once() -> None:
    assert leaked_now(_outbound(Stage.REDIRECTED)) is Leakage.SCHEDULED_ELSEWHERE
    assert leaked_now(_outbound(Stage.REDIRECTED, direction=Direction.INBOUND)) is None
    assert leaked_now(_outbound(Stage.DECLINED)) is None


async def _outbound_referral(client: httpx.AsyncClient, mint: Mint, referrer: str) -> str:
    response = await client.post(
        "/referrals",
        json={
            "location_id": "loc-north",
            "patient_id": "pat-1",
            "direction": "outbound",
            "urgency": "routine",
            "referring_provider_id": referrer,
        },
        headers=mint(),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.mark.service
async def test_outbound_referrals_leak_once_per_kind(
    referrals: httpx.AsyncClient,
    referrals_app: FastAPI,
    referrals_settings: ReferralsSettings,
    mint: Mint,
    clock: FrozenClock,
    topic_prefix: str,
) -> None:
    worker = clock_worker(referrals_app.state.runtime)
    referrer = await _directory_entry(referrals, mint(), VALID_NPIS[0])
    unbooked = await _outbound_referral(referrals, mint, referrer)
    booked = await _outbound_referral(referrals, mint, referrer)
    elsewhere = await _outbound_referral(referrals, mint, referrer)
    for step in (("triaged", {}), ("scheduled", {"appointment_id": "apt-out-1"}), ("seen", {})):
        assert (await _move(referrals, mint(), booked, step[0], **step[1])).status_code == 200
    redirected = await _move(
        referrals, mint(), elsewhere, "redirected", reason="Patient chose a clinic nearer home"
    )
    assert redirected.status_code == 200, redirected.text

    clock.advance(timedelta(days=31))  # past the routine 30 days and 14 days
    while await worker.fire_due():
        pass

    topic = prefixed("careloop.referrals", topic_prefix)
    await wait_for_records(
        referrals_settings.kafka_bootstrap,
        topic,
        lambda rs: sum(1 for r in rs if header(r, "ce_type") == LEAKED) >= 3,
    )
    found = sorted(
        (header(r, "ce_subject"), json.loads(r.value)["leakage"])
        for r in await read_topic(referrals_settings.kafka_bootstrap, topic)
        if header(r, "ce_type") == LEAKED
    )
    assert found == sorted(
        [
            (unbooked, "never-scheduled"),
            (booked, "no-report-back"),
            (elsewhere, "scheduled-elsewhere"),
        ]
    )
