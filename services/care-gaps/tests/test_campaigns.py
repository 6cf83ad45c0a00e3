"""Outreach campaigns against real PostgreSQL, Kafka and OpenBao: a launch asks
messaging for step 1 for every patient with an open gap of the campaign's measures at
its location and marks those gaps outreach-sent; the clock moved past `respond_by`
fires step 2, then `OutreachUnanswered`; a booking ends the chain; a second launch or a
redelivered timer sends nothing more; and the walls (validation, scope, roles, tenants).

Demographics and the location view are seeded straight into care-gaps' store; facts and
visits arrive as the owning services' events. Every patient is synthetic.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from careloop_caregaps.handlers.steps import step_worker
from careloop_caregaps.store.codec import demographics_text
from careloop_caregaps.store.repository import repositories
from careloop_caregaps.usecases.answers import STEP_TIMER
from careloop_caregaps.usecases.campaigns import fire_step
from careloop_caregaps.usecases.common import field_cipher
from fastapi import FastAPI

from careloop_contracts import Event
from careloop_contracts.patients import ClinicalFactRecorded, FactCoding
from careloop_contracts.scheduling import AppointmentBooked
from careloop_kit.clock import FrozenClock
from careloop_kit.db.timers import DueTimer
from careloop_kit.service import Runtime
from careloop_kit.testing.kafka import publish_event, read_topic
from careloop_kit.testing.services import Mint

pytestmark = pytest.mark.service

MEASURE = "diabetes-hba1c"
DIABETES = FactCoding(system="icd-10-cm", code="E11.9")
LOCATION = "loc-north"
STEPS = [{"channel": "sms", "wait_days": 3}, {"channel": "email", "wait_days": 5}]


def _runtime(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


async def _publish(runtime: Runtime, event: Event) -> None:
    await publish_event(runtime.producer, runtime.topic(event.topic), event)


async def _seed(runtime: Runtime, org: str, *, sensitive_id: str = "loc-quiet") -> None:
    """Identity's locations as the view keeps them: one plain, one sensitive."""
    now = runtime.clock.now()
    async with runtime.sessionmaker() as session, session.begin():
        locations = repositories(session).locations
        await locations.apply(
            org,
            LOCATION,
            sensitive=False,
            name="North Clinic",
            time_zone="America/Chicago",
            changed_at=now,
            now=now,
        )
        await locations.apply(
            org,
            sensitive_id,
            sensitive=True,
            name="Quiet Clinic",
            time_zone="America/Chicago",
            changed_at=now,
            now=now,
        )


async def _diabetic(runtime: Runtime, org: str, patient_id: str, unique_id: str) -> None:
    """A patient with a visit at the location (their attribution), then a diabetes fact."""
    async with runtime.sessionmaker() as session, session.begin():
        sealed = await field_cipher(runtime).seal_field(
            session,
            demographics_text(date(1970, 5, 1), "female"),
            org_id=org,
            table="patient_profile",
            column="demographics",
            row_id=patient_id,
        )
        await repositories(session).patients.set_demographics(
            org, patient_id, sealed, runtime.clock.now()
        )
    await _publish(runtime, AppointmentBooked(**_appointment(org, patient_id, "type-x")))
    await _publish(
        runtime,
        ClinicalFactRecorded(
            fact_id=f"fact-{patient_id}-{unique_id}",
            patient_id=patient_id,
            org_id=org,
            kind="condition",
            version=1,
            status="active",
            codes=(DIABETES,),
            effective_on=date(2020, 1, 1),
            quantities=(),
            source="ehr-import",
            recorded_at=datetime(2026, 3, 1, tzinfo=UTC),
        ),
    )


def _appointment(org: str, patient_id: str, type_id: str) -> dict[str, Any]:
    start = datetime(2026, 3, 20, 14, 0, tzinfo=UTC)
    return {
        "appointment_id": f"apt-{patient_id}-{type_id}",
        "patient_id": patient_id,
        "org_id": org,
        "location_id": LOCATION,
        "provider_id": "prov-1",
        "appointment_type_id": type_id,
        "start_at": start,
        "end_at": start + timedelta(minutes=30),
        "status": "booked",
        "confirmation": "unconfirmed",
        "occurred_at": datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
    }


async def _gap(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    patient_id: str,
    done: Callable[[dict[str, Any]], bool],
) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    found: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await client.get(f"/patients/{patient_id}/gaps", headers=headers)
        assert response.status_code == 200, response.text
        mine = [g for g in response.json()["items"] if g["measure_id"] == MEASURE]
        if mine:
            found = mine[0]
            if done(found):
                return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"the gap of {patient_id} never got there: {found}")


async def _events(runtime: Runtime, kind: str, campaign_id: str) -> list[dict[str, Any]]:
    records = await read_topic(runtime.settings.kafka_bootstrap, runtime.topic("careloop.caregaps"))
    bodies = [json.loads(r.value) for r in records if r.value]
    wanted = "respond_by" if kind == "requested" else "open_gaps"
    return [b for b in bodies if b.get("campaign_id") == campaign_id and wanted in b]


async def _wait_events(
    runtime: Runtime, kind: str, campaign_id: str, count: int
) -> list[dict[str, Any]]:
    """The campaign's events once the relay published `count` of them (and a moment
    more, so one too many would show)."""
    deadline = time.monotonic() + 20
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = await _events(runtime, kind, campaign_id)
        if len(found) >= count:
            await asyncio.sleep(1.0)
            return await _events(runtime, kind, campaign_id)
        await asyncio.sleep(0.3)
    raise AssertionError(f"{count} {kind} events expected for {campaign_id}, got {found}")


async def _campaign(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    created = await client.post(
        "/campaigns",
        json={
            "name": "Spring HbA1c",
            "measure_ids": [MEASURE],
            "location_id": LOCATION,
            "steps": STEPS,
        },
        headers=headers,
    )
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    assert body["status"] == "draft"
    return body


async def test_a_launch_reaches_each_patient_once_then_step_two_then_the_coordinators(
    caregaps: httpx.AsyncClient,
    caregaps_app: FastAPI,
    clock: FrozenClock,
    mint: Mint,
    unique_id: str,
) -> None:
    runtime = _runtime(caregaps_app)
    org = f"org-{unique_id}"
    await _seed(runtime, org)
    for patient in ("pat-1", "pat-2"):
        await _diabetic(runtime, org, patient, unique_id)
    for patient in ("pat-1", "pat-2"):
        await _gap(caregaps, mint(), patient, lambda g: g["location_id"] == LOCATION)

    campaign = await _campaign(caregaps, mint())
    launched = await caregaps.post(f"/campaigns/{campaign['id']}/launch", headers=mint())
    assert launched.status_code == 200, launched.text
    assert launched.json()["status"] == "launched"
    counts = launched.json()["counts"]
    assert (counts["patients_targeted"], counts["steps_sent"], counts["waiting"]) == (2, 2, 2)

    requested = await _wait_events(runtime, "requested", campaign["id"], 2)
    assert sorted(e["outreach_key"] for e in requested) == [
        f"{campaign['id']}:pat-1:1",
        f"{campaign['id']}:pat-2:1",
    ]
    first = requested[0]
    assert (first["step"], first["channel"], first["practice_name"]) == (1, "sms", "North Clinic")
    assert (first["location_time_zone"], first["sensitive_location"]) == ("America/Chicago", False)
    assert datetime.fromisoformat(first["respond_by"]) == clock.now() + timedelta(days=3)
    assert MEASURE not in json.dumps(requested)

    gap = await _gap(caregaps, mint(), "pat-1", lambda g: g["status"] == "outreach-sent")
    history = (await caregaps.get(f"/gaps/{gap['id']}", headers=mint())).json()["history"]
    assert (history[-1]["cause"], history[-1]["actor_id"]) == ("outreach", f"user-{unique_id}")

    # Launching again reaches no one twice.
    again = await caregaps.post(f"/campaigns/{campaign['id']}/launch", headers=mint())
    assert again.json()["counts"]["steps_sent"] == 2
    worker = step_worker(runtime)
    assert await worker.fire_due() == 0  # not yet due
    assert len(await _wait_events(runtime, "requested", campaign["id"], 2)) == 2

    clock.advance(timedelta(days=3, minutes=1))
    assert await worker.fire_due() == 2
    requested = await _wait_events(runtime, "requested", campaign["id"], 4)
    second = [e for e in requested if e["step"] == 2]
    assert len(second) == 2
    assert {e["channel"] for e in second} == {"email"}
    assert await worker.fire_due() == 0  # the fired timers stay fired
    # Step 1's timer delivered again (a replica that fired it late): the outreach moved
    # on, so nothing is sent.
    async with runtime.sessionmaker() as session, session.begin():
        payload = {"org_id": org, "campaign_id": campaign["id"], "patient_id": "pat-1", "step": 1}
        await fire_step(runtime, session, DueTimer(0, STEP_TIMER, clock.now(), payload, 0))
    assert len(await _wait_events(runtime, "requested", campaign["id"], 4)) == 4

    clock.advance(timedelta(days=5, minutes=1))
    assert await worker.fire_due() == 2
    unanswered = await _wait_events(runtime, "unanswered", campaign["id"], 2)
    assert sorted(e["outreach_key"] for e in unanswered) == [
        f"{campaign['id']}:pat-1",
        f"{campaign['id']}:pat-2",
    ]
    assert {e["open_gaps"] for e in unanswered} == {1}
    assert len(await _events(runtime, "requested", campaign["id"])) == 4

    read = (await caregaps.get(f"/campaigns/{campaign['id']}", headers=mint())).json()
    assert read["counts"] == {
        "patients_targeted": 2,
        "steps_sent": 4,
        "waiting": 0,
        "scheduled": 0,
        "closed": 0,
        "unanswered": 2,
        "stopped": 0,
    }
    listed = (await caregaps.get("/campaigns", headers=mint())).json()["items"]
    assert [c["id"] for c in listed] == [campaign["id"]]

    access = [
        b
        for b in (
            json.loads(r.value)
            for r in await read_topic(
                runtime.settings.kafka_bootstrap, runtime.topic("careloop.caregaps")
            )
            if r.value
        )
        if "audit_id" in b and b.get("resource_id") == campaign["id"]
    ]
    assert access
    assert access[0]["actor_id"] == f"user-{unique_id}"


async def test_a_booking_ends_the_chain_and_a_stop_ends_the_rest(
    caregaps: httpx.AsyncClient,
    caregaps_app: FastAPI,
    clock: FrozenClock,
    mint: Mint,
    unique_id: str,
) -> None:
    runtime = _runtime(caregaps_app)
    org = f"org-{unique_id}"
    await _seed(runtime, org)
    listed = await caregaps.put(
        f"/measures/{MEASURE}/visit-types",
        json={"appointment_type_ids": ["type-diabetes"]},
        headers=mint(),
    )
    assert listed.status_code == 200, listed.text
    for patient in ("pat-1", "pat-2"):
        await _diabetic(runtime, org, patient, unique_id)
    for patient in ("pat-1", "pat-2"):
        await _gap(caregaps, mint(), patient, lambda g: g["location_id"] == LOCATION)
    campaign = await _campaign(caregaps, mint())
    await caregaps.post(f"/campaigns/{campaign['id']}/launch", headers=mint())
    await _gap(caregaps, mint(), "pat-1", lambda g: g["status"] == "outreach-sent")

    await _publish(runtime, AppointmentBooked(**_appointment(org, "pat-1", "type-diabetes")))
    await _gap(caregaps, mint(), "pat-1", lambda g: g["status"] == "scheduled")
    stopped = await caregaps.post(f"/campaigns/{campaign['id']}/stop", headers=mint())
    assert stopped.status_code == 200, stopped.text
    counts = stopped.json()["counts"]
    assert (counts["scheduled"], counts["stopped"], counts["waiting"]) == (1, 1, 0)

    clock.advance(timedelta(days=4))
    assert await step_worker(runtime).fire_due() == 0  # both timers were cancelled
    assert len(await _wait_events(runtime, "requested", campaign["id"], 2)) == 2
    relaunch = await caregaps.post(f"/campaigns/{campaign['id']}/launch", headers=mint())
    assert relaunch.status_code == 409
    assert relaunch.headers["content-type"] == "application/problem+json"


async def test_the_walls_of_campaigns(
    caregaps: httpx.AsyncClient, caregaps_app: FastAPI, mint: Mint, unique_id: str
) -> None:
    runtime = _runtime(caregaps_app)
    org = f"org-{unique_id}"
    await _seed(runtime, org)

    def body(**changes: object) -> dict[str, object]:
        return {
            "name": "Spring HbA1c",
            "measure_ids": [MEASURE],
            "location_id": LOCATION,
            "steps": STEPS,
            **changes,
        }

    for wrong in (
        body(measure_ids=["no-such-measure"]),
        body(steps=[]),
        body(location_id="loc-quiet"),  # sensitive: an org-wide scope does not name it
    ):
        refused = await caregaps.post("/campaigns", json=wrong, headers=mint())
        assert refused.status_code == 422, (wrong, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
    south = mint(loc=["loc-south"])
    assert (await caregaps.post("/campaigns", json=body(), headers=south)).status_code == 422
    quiet = mint(loc=["loc-quiet"])
    assert (
        await caregaps.post("/campaigns", json=body(location_id="loc-quiet"), headers=quiet)
    ).status_code == 201

    campaign = await _campaign(caregaps, mint())
    path = f"/campaigns/{campaign['id']}"
    assert (await caregaps.get(path, headers=mint(org="org-other"))).status_code == 404
    assert (await caregaps.get(path, headers=south)).status_code == 404
    assert [
        c["id"] for c in (await caregaps.get("/campaigns", headers=south)).json()["items"]
    ] == []
    reader = mint(roles=["provider"])
    assert (await caregaps.post(f"{path}/launch", headers=reader)).status_code == 403
    assert (await caregaps.get(path, headers=reader)).status_code == 200
