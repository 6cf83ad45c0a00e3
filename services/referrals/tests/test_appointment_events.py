"""Scheduling's appointment events move the referral their appointment is linked to:
arrival is `seen`, a no-show or a plain cancellation sends it back to `patient
contacted`, a reschedule carries the link to the new appointment; a redelivered event
changes nothing, and an appointment no referral is linked to is ignored."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from careloop_contracts.scheduling import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentEvent,
    AppointmentNoShow,
)
from careloop_kit.service import Runtime
from careloop_kit.testing.kafka import publish_event
from careloop_kit.testing.services import Mint

from .test_referrals_api import VALID_NPIS, _directory_entry, _move, _referral

pytestmark = pytest.mark.service


def _snapshot(org_id: str, appointment_id: str, status: str) -> dict[str, Any]:
    start = datetime(2026, 3, 10, 14, 0, tzinfo=UTC)
    return {
        "appointment_id": appointment_id,
        "patient_id": "pat-1",
        "org_id": org_id,
        "location_id": "loc-north",
        "provider_id": "prov-1",
        "appointment_type_id": "type-1",
        "start_at": start,
        "end_at": start + timedelta(minutes=30),
        "status": status,
        "confirmation": "unconfirmed",
        "occurred_at": datetime(2026, 3, 3, 9, 0, tzinfo=UTC),
    }


async def _publish(runtime: Runtime, event: AppointmentEvent, event_id: str | None = None) -> None:
    """As scheduling's relay would: the same envelope headers, keyed by patient."""
    await publish_event(runtime.producer, runtime.topic(event.topic), event, event_id=event_id)


async def _until(
    client: httpx.AsyncClient,
    mint: Mint,
    referral_id: object,
    done: Callable[[dict[str, Any]], bool],
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = (await client.get(f"/referrals/{referral_id}", headers=mint())).json()
        if done(body):
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"referral {referral_id} never reached the state: {body}")


async def test_linked_appointment_events_move_the_referral(
    referrals: httpx.AsyncClient, referrals_app: FastAPI, mint: Mint, unique_id: str
) -> None:
    runtime: Runtime = referrals_app.state.runtime
    org_id = f"org-{unique_id}"
    referrer = await _directory_entry(referrals, mint(), VALID_NPIS[0])
    ids = []
    for appointment_id in ("apt-1", "apt-3"):
        created = await _referral(referrals, mint(), referrer)
        await _move(referrals, mint(), created["id"], "triaged")
        moved = await _move(
            referrals, mint(), created["id"], "scheduled", appointment_id=appointment_id
        )
        assert moved.status_code == 200, moved.text
        ids.append(created["id"])
    first, second = ids

    # A reschedule: scheduling cancels apt-1 (pointing at apt-2), then books apt-2.
    await _publish(
        runtime,
        AppointmentCancelled(**_snapshot(org_id, "apt-1", "cancelled"), rescheduled_to_id="apt-2"),
    )
    await _publish(
        runtime,
        AppointmentBooked(**_snapshot(org_id, "apt-2", "booked"), rescheduled_from_id="apt-1"),
    )
    relinked = await _until(referrals, mint, first, lambda b: b["appointment_id"] == "apt-2")
    assert relinked["stage"] == "scheduled"

    arrived_id = str(uuid.uuid4())
    arrived = AppointmentCheckedIn(**_snapshot(org_id, "apt-2", "arrived"))
    await _publish(runtime, arrived, arrived_id)
    await _publish(runtime, arrived, arrived_id)  # redelivered
    await _publish(runtime, AppointmentCheckedIn(**_snapshot(org_id, "apt-unlinked", "arrived")))
    seen = await _until(referrals, mint, first, lambda b: b["stage"] == "seen")
    assert seen["history"][-1]["actor"] == "service:referrals"

    await _publish(runtime, AppointmentNoShow(**_snapshot(org_id, "apt-3", "noshow")))
    back = await _until(referrals, mint, second, lambda b: b["stage"] == "patient-contacted")
    assert back["appointment_id"] is None
    assert back["history"][-1]["reason"] == "The patient did not come to the linked appointment."

    # Everything published has been applied by now; the redelivery added no second step.
    final = await _until(referrals, mint, first, lambda b: b["stage"] == "seen")
    assert [h["to_stage"] for h in final["history"]].count("seen") == 1
