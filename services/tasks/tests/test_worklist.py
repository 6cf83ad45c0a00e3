"""The worklist against real PostgreSQL, Kafka and OpenBao: round-robin over a queue's
members, claim, assign and complete against versions (a stale or concurrent change is a
409), comments sealed at rest and withheld from who may not see clinical data, filters,
counts and overdue flags, the overdue event at the due time, and the walls between
locations, tenants and patients."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from careloop_contracts import prefixed
from careloop_kit.clock import FrozenClock
from careloop_kit.service import Runtime
from careloop_kit.testing.kafka import header, read_topic, wait_for_records
from careloop_kit.testing.services import Mint
from careloop_tasks.handlers.overdue import overdue_worker
from careloop_tasks.settings import TasksSettings

pytestmark = pytest.mark.service

COMMENT = "Patient asked to be called after 5pm, marker-T4K9"
QUEUE_PATH = "/tasks/queues/referral-coordinator/loc-north/members"


async def _task(
    client: httpx.AsyncClient, headers: dict[str, str], **overrides: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "location_id": "loc-north",
        "queue_role": "referral-coordinator",
        "kind": "follow-up",
        "priority": "normal",
        "due_in_hours": 4,
        "patient_id": "pat-1",
    }
    body.update(overrides)
    response = await client.post("/tasks", json=body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_round_robin_claim_assign_and_complete_against_versions(
    tasks: httpx.AsyncClient,
    tasks_app: FastAPI,
    tasks_settings: TasksSettings,
    mint: Mint,
    topic_prefix: str,
) -> None:
    admin = mint()
    for member in ("member-c", "member-a", "member-b"):
        added = await tasks.put(f"{QUEUE_PATH}/{member}", headers=admin)
        assert added.status_code == 200, added.text
    assert (await tasks.get(QUEUE_PATH, headers=admin)).json()["members"] == [
        "member-a",
        "member-b",
        "member-c",
    ]
    made = [await _task(tasks, admin) for _ in range(4)]
    assert [t["assignee_id"] for t in made] == ["member-a", "member-b", "member-c", "member-a"]
    assert all(t["title"] == "Follow up with a patient" for t in made)

    first = made[0]
    member_b = mint(sub="member-b", roles=["care_coordinator"], loc=["loc-north"])
    outsider = mint(sub="member-z", roles=["care_coordinator"], loc=["loc-north"])
    refused = await tasks.post(f"/tasks/{first['id']}/claim", json={"version": 1}, headers=outsider)
    assert refused.status_code == 403
    claimed = await tasks.post(f"/tasks/{first['id']}/claim", json={"version": 1}, headers=member_b)
    assert claimed.status_code == 200, claimed.text
    assert (claimed.json()["assignee_id"], claimed.json()["status"]) == ("member-b", "in-progress")
    stale = await tasks.post(f"/tasks/{first['id']}/claim", json={"version": 1}, headers=member_b)
    assert stale.status_code == 409
    assert stale.headers["content-type"].startswith("application/problem+json")
    assert stale.json()["current_version"] == 2

    not_member = await tasks.post(
        f"/tasks/{first['id']}/assign",
        json={"version": 2, "assignee_id": "member-z"},
        headers=admin,
    )
    assert not_member.status_code == 422
    assigned = await tasks.post(
        f"/tasks/{first['id']}/assign",
        json={"version": 2, "assignee_id": "member-c"},
        headers=admin,
    )
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["version"] == 3

    done = {"version": 3, "outcome": "resolved"}
    both = await asyncio.gather(
        tasks.post(f"/tasks/{first['id']}/complete", json=done, headers=admin),
        tasks.post(f"/tasks/{first['id']}/complete", json=done, headers=member_b),
    )
    assert sorted(r.status_code for r in both) == [200, 409]
    again = await tasks.post(
        f"/tasks/{first['id']}/complete", json={"version": 4, "outcome": "resolved"}, headers=admin
    )
    assert again.status_code == 409
    assert again.json()["current_status"] == "completed"
    cancelled = await tasks.post(
        f"/tasks/{made[1]['id']}/cancel", json={"version": 1}, headers=admin
    )
    assert cancelled.json()["status"] == "cancelled"

    topic = prefixed("careloop.tasks", topic_prefix)
    records = await wait_for_records(
        tasks_settings.kafka_bootstrap,
        topic,
        lambda rs: any(header(r, "ce_type") == "careloop.tasks.task.completed.v1" for r in rs),
    )
    of_first = [
        header(r, "ce_type").rsplit(".", 2)[1]  # type: ignore[union-attr]
        for r in records
        if header(r, "ce_subject") == first["id"]
    ]
    assert sorted(of_first) == ["assigned", "assigned", "assigned", "completed", "created"]


async def test_comments_are_sealed_at_rest_and_withheld_without_clinical_access(
    tasks: httpx.AsyncClient, tasks_settings: TasksSettings, mint: Mint
) -> None:
    admin = mint()
    created = await _task(tasks, admin, note="Discuss the MRI result, marker-N0TE")
    assert created["note"] == "Discuss the MRI result, marker-N0TE"
    commented = await tasks.post(
        f"/tasks/{created['id']}/comments", json={"body": COMMENT}, headers=admin
    )
    assert commented.status_code == 201, commented.text
    assert [c["body"] for c in commented.json()["comments"]] == [COMMENT]
    front_desk = mint(roles=["front_desk"], loc=["loc-north"], amr=["pwd"])
    withheld = (await tasks.get(f"/tasks/{created['id']}", headers=front_desk)).json()
    assert [c["body"] for c in withheld["comments"]] == [None]
    assert withheld["note"] is None
    assert withheld["withheld_categories"] == ["clinical"]

    engine = create_async_engine(tasks_settings.database_url.get_secret_value())
    try:
        async with engine.connect() as conn:
            dump = [
                str(row)
                for table in ("task", "task_comment")
                for row in (await conn.execute(text(f"SELECT * FROM {table}"))).all()
            ]
    finally:
        await engine.dispose()
    assert dump
    assert not any("marker-T4K9" in row or "marker-N0TE" in row for row in dump)


async def test_worklist_filters_counts_and_the_overdue_event(
    tasks: httpx.AsyncClient,
    tasks_app: FastAPI,
    tasks_settings: TasksSettings,
    mint: Mint,
    clock: FrozenClock,
    topic_prefix: str,
) -> None:
    admin = mint()
    await tasks.put(f"{QUEUE_PATH}/member-a", headers=admin)
    mine = await _task(tasks, admin, due_in_hours=2)  # round-robin: member-a
    await tasks.delete(f"{QUEUE_PATH}/member-a", headers=admin)
    later = await _task(tasks, admin, due_in_hours=48, patient_id="pat-2")
    done = await _task(tasks, admin, due_in_hours=1)
    south = await _task(tasks, admin, location_id="loc-south", due_in_hours=1)
    await tasks.post(
        f"/tasks/{done['id']}/complete",
        json={"version": 1, "outcome": "unreachable"},
        headers=admin,
    )

    async def ids(headers: dict[str, str], **params: Any) -> set[str]:
        response = await tasks.get("/tasks", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return {t["id"] for t in response.json()["items"]}

    member_a = mint(sub="member-a", roles=["care_coordinator"], loc=["loc-north"])
    assert await ids(member_a, assignee="me") == {mine["id"]}
    assert await ids(admin, location_id="loc-north", status="open") == {mine["id"], later["id"]}
    assert await ids(admin, patient_id="pat-2") == {later["id"]}
    assert await ids(admin, queue="referral-coordinator@loc-south") == {south["id"]}
    assert await ids(admin, status=["open", "completed"], location_id="loc-north") == {
        mine["id"],
        later["id"],
        done["id"],
    }
    page = await tasks.get("/tasks", params={"limit": 2}, headers=admin)
    rest = await tasks.get(
        "/tasks", params={"limit": 2, "after": page.json()["next_after"]}, headers=admin
    )
    assert len({t["id"] for t in page.json()["items"] + rest.json()["items"]}) == 4
    # A full page says where to go on; past the end there is nothing.
    end = await tasks.get(
        "/tasks", params={"limit": 2, "after": rest.json()["next_after"]}, headers=admin
    )
    assert end.json() == {"items": [], "next_after": None}

    clock.advance(timedelta(hours=3))
    admin = mint()  # tokens minted after moving time
    member_a = mint(sub="member-a", roles=["care_coordinator"], loc=["loc-north"])
    assert await ids(admin, overdue="true") == {mine["id"], south["id"]}
    assert await ids(member_a, overdue="true") == {mine["id"]}  # loc-north only
    counts = (
        await tasks.get("/tasks/counts", params={"location_id": "loc-north"}, headers=admin)
    ).json()
    assert counts == {
        "by_status": {"open": 2, "in-progress": 0, "completed": 1, "cancelled": 0},
        "overdue": 1,
    }
    listed = (await tasks.get("/tasks", params={"overdue": "true"}, headers=admin)).json()
    assert all(t["overdue"] for t in listed["items"])

    runtime: Runtime = tasks_app.state.runtime
    worker = overdue_worker(runtime)
    assert await worker.fire_due() == 3  # mine, done (nothing to report) and south
    assert await worker.fire_due() == 0
    topic = prefixed("careloop.tasks", topic_prefix)
    overdue = "careloop.tasks.task.overdue.v1"
    await wait_for_records(
        tasks_settings.kafka_bootstrap,
        topic,
        lambda rs: sum(1 for r in rs if header(r, "ce_type") == overdue) >= 2,
    )
    records = await read_topic(tasks_settings.kafka_bootstrap, topic)
    assert sorted(
        header(r, "ce_subject") or "" for r in records if header(r, "ce_type") == overdue
    ) == sorted([mine["id"], south["id"]])


async def test_other_locations_tenants_and_patients_are_refused(
    tasks: httpx.AsyncClient, mint: Mint
) -> None:
    north = await _task(tasks, mint())
    south = await _task(tasks, mint(), location_id="loc-south")
    south_staff = mint(roles=["care_coordinator"], loc=["loc-south"])

    assert (await tasks.get(f"/tasks/{north['id']}", headers=south_staff)).status_code == 403
    claim = await tasks.post(
        f"/tasks/{north['id']}/claim", json={"version": 1}, headers=south_staff
    )
    assert claim.status_code == 403
    listed = (await tasks.get("/tasks", headers=south_staff)).json()["items"]
    assert [t["id"] for t in listed] == [south["id"]]
    assert (
        await tasks.get("/tasks", params={"location_id": "loc-north"}, headers=south_staff)
    ).status_code == 403
    counts = (await tasks.get("/tasks/counts", headers=south_staff)).json()
    assert counts["by_status"]["open"] == 1
    assert (
        await tasks.post(
            "/tasks",
            json={"location_id": "loc-north", "queue_role": "x", "kind": "general"},
            headers=south_staff,
        )
    ).status_code == 403
    assert (await tasks.put(f"{QUEUE_PATH}/someone", headers=south_staff)).status_code == 403

    other_tenant = mint(org="org-elsewhere")
    missing = await tasks.get(f"/tasks/{north['id']}", headers=other_tenant)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert (await tasks.get("/tasks", headers=other_tenant)).json()["items"] == []

    patient = mint(roles=["patient"], loc=[], pat="pat-1", act="patient", amr=["pwd"])
    for response in (
        await tasks.get("/tasks", headers=patient),
        await tasks.get(f"/tasks/{north['id']}", headers=patient),
        await tasks.get("/tasks/counts", headers=patient),
    ):
        assert response.status_code == 403

    bad = await tasks.post(
        "/tasks",
        json={"location_id": "loc-north", "queue_role": "x", "kind": "Call Jane Doe"},
        headers=mint(),
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
