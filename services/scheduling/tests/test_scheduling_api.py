"""The scheduling API against real PostgreSQL, Kafka and OpenBao."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from careloop_kit.auth import required_permission
from careloop_kit.clock import FrozenClock
from careloop_kit.testing.kafka import header, wait_for_records
from careloop_kit.testing.services import Mint
from careloop_scheduling.api.appointments import router as appointments_router
from careloop_scheduling.api.catalog import router as catalog_router

from .practice import LOCATION, MONDAY_NINE, Practice, set_up_practice

pytestmark = pytest.mark.service

ACCESS = "careloop.audit.access.recorded.v1"
EVENT = "careloop.scheduling.appointment.{}.v1"
HALF_HOUR = timedelta(minutes=30)


async def book(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    practice: Practice,
    patient: str,
    start: datetime = MONDAY_NINE,
) -> dict[str, Any]:
    response = await client.post(
        "/appointments", json=practice.booking(patient, start), headers=headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_slots_are_local_mornings_and_booked_ones_disappear(
    scheduling: httpx.AsyncClient, org: dict[str, str], practice: Practice
) -> None:
    params = {
        "appointment_type_id": practice.type_id,
        "location_id": practice.location_id,
        "from": "2030-03-04T00:00:00Z",
        "to": "2030-03-05T00:00:00Z",
    }
    before = await scheduling.get("/slots", params=params, headers=org)
    await book(scheduling, org, practice, "pat-1")
    after = await scheduling.get("/slots", params=params, headers=org)

    assert before.status_code == 200, before.text
    assert before.json()["time_zone"] == "America/New_York"
    assert [s["local_start"][11:16] for s in before.json()["items"]] == [
        "09:00",
        "09:30",
        "10:00",
        "10:30",
        "11:00",
        "11:30",
    ]
    assert before.json()["items"][0]["start_at"].startswith("2030-03-04T14:00:00")
    assert after.json()["count"] == 5


async def test_slots_after_the_dst_change_still_start_at_nine_local(
    scheduling: httpx.AsyncClient, org: dict[str, str], practice: Practice
) -> None:
    params = {
        "appointment_type_id": practice.type_id,
        "location_id": practice.location_id,
        "from": "2030-03-11T00:00:00Z",  # the Monday after spring-forward: EDT
        "to": "2030-03-12T00:00:00Z",
    }

    slots = (await scheduling.get("/slots", params=params, headers=org)).json()["items"]

    assert slots[0]["start_at"].startswith("2030-03-11T13:00:00")
    assert slots[0]["local_start"] == "2030-03-11T09:00:00-04:00"


async def test_book_read_list_and_the_booked_event(
    scheduling: httpx.AsyncClient,
    org: dict[str, str],
    practice: Practice,
    unique_id: str,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    created = await book(scheduling, org, practice, f"pat-{unique_id}")

    read = await scheduling.get(f"/appointments/{created['id']}", headers=org)
    listed = await scheduling.get(
        "/appointments", params={"patient_id": f"pat-{unique_id}"}, headers=org
    )
    by_provider = await scheduling.get(
        "/appointments",
        params={"provider_id": practice.provider_id, "from": "2030-03-04T00:00:00Z"},
        headers=org,
    )

    assert created["status"] == "booked"
    assert created["confirmation"] == "unconfirmed"
    assert created["end_at"].startswith("2030-03-04T14:30:00")
    assert read.json() == created
    assert [a["id"] for a in listed.json()["items"]] == [created["id"]]
    assert [a["id"] for a in by_provider.json()["items"]] == [created["id"]]

    topic = f"{topic_prefix}careloop.scheduling"
    records = await wait_for_records(
        kafka_bootstrap,
        topic,
        lambda rs: sum(header(r, "ce_type") == ACCESS for r in rs) >= 4,
    )
    booked = [r for r in records if header(r, "ce_type") == EVENT.format("booked")]
    assert len(booked) == 1
    assert booked[0].key.decode() == f"pat-{unique_id}"
    payload = json.loads(booked[0].value)
    assert payload["appointment_id"] == created["id"]
    assert payload["start_at"].startswith("2030-03-04T14:00:00")
    assert "name" not in json.dumps(payload).lower()
    accesses = sorted(
        (json.loads(r.value) for r in records if header(r, "ce_type") == ACCESS),
        key=lambda a: a["occurred_at"],
    )
    assert [(a["action"], a["resource_type"], a["phi_categories"]) for a in accesses][:2] == [
        ("create", "Appointment", ["clinical"]),
        ("read", "Appointment", ["clinical"]),
    ]
    assert {a["patient_id"] for a in accesses} == {f"pat-{unique_id}"}


async def test_an_off_grid_or_past_time_is_refused(
    scheduling: httpx.AsyncClient, org: dict[str, str], practice: Practice
) -> None:
    off_grid = await scheduling.post(
        "/appointments",
        json=practice.booking("pat-1", MONDAY_NINE + timedelta(minutes=10)),
        headers=org,
    )
    saturday = await scheduling.post(
        "/appointments",
        json=practice.booking("pat-1", MONDAY_NINE - timedelta(days=2)),
        headers=org,
    )
    past = await scheduling.post(
        "/appointments",
        json=practice.booking("pat-1", MONDAY_NINE - timedelta(days=7)),
        headers=org,
    )

    for response in (off_grid, saturday, past):
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"


async def test_double_booking_is_a_409(
    scheduling: httpx.AsyncClient, org: dict[str, str], practice: Practice
) -> None:
    await book(scheduling, org, practice, "pat-1")

    again = await scheduling.post(
        "/appointments", json=practice.booking("pat-2", MONDAY_NINE), headers=org
    )

    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


async def test_two_concurrent_bookings_of_the_last_slot_one_wins(
    scheduling: httpx.AsyncClient, org: dict[str, str], mint: Mint, unique_id: str
) -> None:
    # A provider with exactly one slot: Monday 09:00-09:30.
    practice = await set_up_practice(scheduling, org, "loc-tiny", end="09:30")

    responses = await asyncio.gather(
        *(
            scheduling.post(
                "/appointments", json=practice.booking(f"pat-{n}", MONDAY_NINE), headers=org
            )
            for n in range(2)
        )
    )

    assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
    slots = await scheduling.get(
        "/slots",
        params={
            "appointment_type_id": practice.type_id,
            "location_id": "loc-tiny",
            "from": "2030-03-04T00:00:00Z",
            "to": "2030-03-05T00:00:00Z",
        },
        headers=org,
    )
    assert slots.json()["items"] == []


async def test_cancel_frees_the_slot_and_a_second_cancel_is_409(
    scheduling: httpx.AsyncClient, org: dict[str, str], practice: Practice
) -> None:
    first = await book(scheduling, org, practice, "pat-1")

    cancelled = await scheduling.post(
        f"/appointments/{first['id']}/cancel", json={"reason": "patient asked"}, headers=org
    )
    again = await scheduling.post(f"/appointments/{first['id']}/cancel", json={}, headers=org)
    rebooked = await book(scheduling, org, practice, "pat-2")

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert rebooked["status"] == "booked"


async def test_reschedule_cancels_old_books_new_linked_and_emits_three_events(
    scheduling: httpx.AsyncClient,
    org: dict[str, str],
    practice: Practice,
    unique_id: str,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    patient = f"pat-{unique_id}"
    old = await book(scheduling, org, practice, patient)
    await scheduling.post(f"/appointments/{old['id']}/confirm", headers=org)

    moved = await scheduling.post(
        f"/appointments/{old['id']}/reschedule",
        json={"start_at": (MONDAY_NINE + HALF_HOUR).isoformat()},
        headers=org,
    )

    assert moved.status_code == 200, moved.text
    cancelled, booked = moved.json()["cancelled"], moved.json()["booked"]
    assert cancelled["status"] == "cancelled"
    assert cancelled["rescheduled_to_id"] == booked["id"]
    assert booked["rescheduled_from_id"] == old["id"]
    assert booked["start_at"].startswith("2030-03-04T14:30:00")
    assert booked["confirmation"] == "unconfirmed"

    types = [EVENT.format(v) for v in ("booked", "confirmed", "cancelled", "rescheduled")]
    records = await wait_for_records(
        kafka_bootstrap,
        f"{topic_prefix}careloop.scheduling",
        lambda rs: sum(header(r, "ce_type") in types for r in rs) >= 5,
    )
    # One patient, one partition: the events are in commit order.
    seen = [header(r, "ce_type") for r in records if header(r, "ce_type") in types]
    assert seen == [types[0], types[1], types[2], types[0], types[3]]
    rescheduled = json.loads(next(r.value for r in records if header(r, "ce_type") == types[3]))
    assert rescheduled["previous_appointment_id"] == old["id"]
    assert rescheduled["appointment_id"] == booked["id"]


async def test_confirm_check_in_and_no_show_follow_the_clock(
    scheduling: httpx.AsyncClient,
    org: dict[str, str],
    mint: Mint,
    practice: Practice,
    clock: FrozenClock,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    first = await book(scheduling, org, practice, "pat-1")
    second = await book(scheduling, org, practice, "pat-2", MONDAY_NINE + HALF_HOUR)

    confirmed = await scheduling.post(f"/appointments/{first['id']}/confirm", headers=org)
    too_early = await scheduling.post(f"/appointments/{first['id']}/check-in", headers=org)
    early_no_show = await scheduling.post(f"/appointments/{second['id']}/no-show", headers=org)
    clock.set(MONDAY_NINE - timedelta(minutes=15))
    staff = mint()  # tokens follow the moved clock
    checked_in = await scheduling.post(f"/appointments/{first['id']}/check-in", headers=staff)
    clock.set(MONDAY_NINE + timedelta(hours=1))
    staff = mint()
    no_show = await scheduling.post(f"/appointments/{second['id']}/no-show", headers=staff)
    cancel_after = await scheduling.post(
        f"/appointments/{second['id']}/cancel", json={}, headers=staff
    )

    assert confirmed.json()["confirmation"] == "confirmed"
    assert (too_early.status_code, early_no_show.status_code) == (409, 409)
    assert checked_in.json()["status"] == "arrived"
    assert no_show.json()["status"] == "noshow"
    assert cancel_after.status_code == 409
    types = [EVENT.format(v) for v in ("confirmed", "checked_in", "no_show")]
    records = await wait_for_records(
        kafka_bootstrap,
        f"{topic_prefix}careloop.scheduling",
        lambda rs: {header(r, "ce_type") for r in rs} >= set(types),
    )
    assert sum(header(r, "ce_type") in types for r in records) == 3


async def test_another_tenant_gets_404_and_another_location_403(
    scheduling: httpx.AsyncClient,
    org: dict[str, str],
    mint: Mint,
    practice: Practice,
    unique_id: str,
) -> None:
    created = await book(scheduling, org, practice, "pat-1")
    elsewhere = mint(org=f"org-{unique_id}-other")
    other_location = mint(roles=["front_desk"], loc=["loc-south"], amr=["pwd"])
    own_location = mint(roles=["front_desk"], loc=[LOCATION], amr=["pwd"])

    assert (
        await scheduling.get(f"/appointments/{created['id']}", headers=elsewhere)
    ).status_code == 404
    assert (
        await scheduling.get(f"/appointments/{created['id']}", headers=other_location)
    ).status_code == 403
    assert (
        await scheduling.get(f"/appointments/{created['id']}", headers=own_location)
    ).status_code == 200
    listed = await scheduling.get(
        "/appointments", params={"patient_id": "pat-1"}, headers=other_location
    )
    assert listed.json()["items"] == []


async def test_a_patient_books_and_sees_only_its_own_appointments(
    scheduling: httpx.AsyncClient,
    org: dict[str, str],
    mint: Mint,
    practice: Practice,
) -> None:
    me = mint(roles=["patient"], act="patient", loc=[], pat="pat-me", amr=["pwd"])
    other = await book(scheduling, org, practice, "pat-other", MONDAY_NINE + HALF_HOUR)

    mine = await scheduling.post(
        "/appointments", json=practice.booking("pat-me", MONDAY_NINE), headers=me
    )
    for_someone = await scheduling.post(
        "/appointments",
        json=practice.booking("pat-other", MONDAY_NINE + 2 * HALF_HOUR),
        headers=me,
    )
    listed = await scheduling.get("/appointments", headers=me)
    peek = await scheduling.get(f"/appointments/{other['id']}", headers=me)

    assert mine.status_code == 201, mine.text
    assert for_someone.status_code == 403
    assert [a["id"] for a in listed.json()["items"]] == [mine.json()["id"]]
    assert peek.status_code == 403


async def test_catalog_needs_manage_and_a_time_zone(
    scheduling: httpx.AsyncClient, org: dict[str, str], mint: Mint
) -> None:
    desk = mint(roles=["front_desk"], loc=["*"], amr=["pwd"])

    refused = await scheduling.post(
        "/providers", json={"display_name": "X", "location_ids": ["loc-1"]}, headers=desk
    )
    provider = await scheduling.post(
        "/providers", json={"display_name": "X", "location_ids": ["loc-1"]}, headers=org
    )
    no_zone = await scheduling.post(
        f"/providers/{provider.json()['id']}/availability",
        json={"location_id": "loc-1", "weekday": 0, "start": "09:00", "end": "10:00"},
        headers=org,
    )
    # Identity owns a location's zone, name and sensitivity: no hand-set copy here.
    hand_set = await scheduling.put(
        "/locations/loc-1", json={"time_zone": "America/Chicago"}, headers=org
    )

    assert refused.status_code == 403
    assert no_zone.status_code == 422
    assert hand_set.status_code == 405


def test_every_route_requires_a_permission() -> None:
    found = {}
    for router in (catalog_router, appointments_router):
        for route in router.routes:
            calls = [d.call for d in route.dependant.dependencies]  # type: ignore[attr-defined]
            found[(sorted(route.methods)[0], route.path)] = [  # type: ignore[attr-defined]
                required_permission(c) for c in calls if required_permission(c)
            ]
    assert all(len(permissions) == 1 for permissions in found.values()), found
    assert found[("POST", "/appointments")] == ["scheduling:book"]
    assert found[("GET", "/slots")] == ["scheduling:read"]
    assert found[("POST", "/providers")] == ["scheduling:manage"]
    assert len(found) == 18


async def test_patients_book_themselves_only_where_self_scheduling_is_on(
    scheduling: httpx.AsyncClient, org: dict[str, str], mint: Mint
) -> None:
    off = await set_up_practice(
        scheduling, org, "loc-staff-books", features={"self_scheduling": False}
    )
    on = await set_up_practice(scheduling, org, "loc-self-books")
    me = mint(roles=["patient"], act="patient", loc=[], pat="pat-me", amr=["pwd"])

    refused = await scheduling.post(
        "/appointments", json=off.booking("pat-me", MONDAY_NINE), headers=me
    )
    by_staff = await scheduling.post(
        "/appointments", json=off.booking("pat-me", MONDAY_NINE), headers=org
    )
    mine = await scheduling.post(
        "/appointments", json=on.booking("pat-me", MONDAY_NINE), headers=me
    )

    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert by_staff.status_code == 201, by_staff.text
    assert mine.status_code == 201, mine.text


async def test_staff_of_every_location_do_not_see_a_sensitive_locations_appointments(
    scheduling: httpx.AsyncClient, org: dict[str, str], mint: Mint
) -> None:
    counselling = await set_up_practice(scheduling, org, "loc-counselling", sensitive=True)
    its_staff = mint(roles=["provider"], loc=["loc-counselling"])
    booked = await scheduling.post(
        "/appointments", json=counselling.booking("pat-bh", MONDAY_NINE), headers=its_staff
    )
    assert booked.status_code == 201, booked.text
    path = f"/appointments/{booked.json()['id']}"

    org_wide = await scheduling.get(path, headers=org)
    org_wide_list = await scheduling.get(
        "/appointments", params={"patient_id": "pat-bh"}, headers=org
    )
    own = await scheduling.get(path, headers=its_staff)
    own_list = await scheduling.get(
        "/appointments", params={"patient_id": "pat-bh"}, headers=its_staff
    )
    patient = mint(roles=["patient"], act="patient", loc=[], pat="pat-bh", amr=["pwd"])

    assert org_wide.status_code == 403
    assert org_wide_list.json()["items"] == []
    assert (await scheduling.post(f"{path}/cancel", json={}, headers=org)).status_code == 403
    assert own.status_code == 200
    assert [a["id"] for a in own_list.json()["items"]] == [booked.json()["id"]]
    assert (await scheduling.get(path, headers=patient)).status_code == 200
