"""Referral stalls and escalations on Kafka become tasks by the organization's rules:
exactly one task per referral stage, however often the fact arrives, and the escalation
raises that same task; an organization's own rules replace the defaults."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from careloop_contracts import prefixed
from careloop_contracts.referrals import (
    AuthorizationExpiring,
    ReferralEscalated,
    ReferralEvent,
    ReferralLeaked,
    ReferralStageChanged,
    ReferralStalled,
)
from careloop_kit.service import Runtime
from careloop_kit.testing.kafka import header, publish_event, read_topic, wait_for_records
from careloop_kit.testing.services import Mint
from careloop_tasks.settings import TasksSettings

pytestmark = pytest.mark.service

CREATED = "careloop.tasks.task.created.v1"
ESCALATED = "careloop.tasks.task.escalated.v1"


def _snapshot(org_id: str, referral_id: str, **overrides: Any) -> dict[str, Any]:
    entered = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    values: dict[str, Any] = {
        "referral_id": referral_id,
        "patient_id": "pat-1",
        "org_id": org_id,
        "location_id": "loc-north",
        "direction": "inbound",
        "urgency": "urgent",
        "stage": "patient-contacted",
        "task_status": "in-progress",
        "version": 4,
        "occurred_at": entered + timedelta(hours=8),
        "stage_entered_at": entered,
    }
    values.update(overrides)
    return values


def _stalled(org_id: str, referral_id: str, **overrides: Any) -> ReferralStalled:
    snapshot = _snapshot(org_id, referral_id, **overrides)
    return ReferralStalled(**snapshot, escalate_at=snapshot["occurred_at"] + timedelta(hours=4))


async def _publish(runtime: Runtime, event: ReferralEvent, event_id: str | None = None) -> None:
    """As referrals' relay would: the same envelope headers, keyed by patient."""
    await publish_event(
        runtime.producer,
        runtime.topic(event.topic),
        event,
        event_id=event_id,
        subject=event.referral_id,
    )


async def _until(
    read: Callable[[], Awaitable[list[dict[str, Any]]]],
    done: Callable[[list[dict[str, Any]]], bool],
    timeout_s: float = 30.0,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = await read()
        if done(found):
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"the worklist never reached the state: {found}")


def _of_subject(
    client: httpx.AsyncClient, mint: Mint, referral_id: str
) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
    async def read() -> list[dict[str, Any]]:
        response = await client.get(
            "/tasks",
            params={"subject_kind": "referral", "subject_id": referral_id},
            headers=mint(),
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    return read


async def test_a_stalled_referral_makes_one_task_and_its_escalation_raises_that_task(
    tasks: httpx.AsyncClient,
    tasks_app: FastAPI,
    tasks_settings: TasksSettings,
    mint: Mint,
    unique_id: str,
    topic_prefix: str,
) -> None:
    runtime: Runtime = tasks_app.state.runtime
    org_id = f"org-{unique_id}"
    stalled_id = str(uuid.uuid4())
    await _publish(runtime, _stalled(org_id, "ref-1"), stalled_id)
    await _publish(runtime, _stalled(org_id, "ref-1"), stalled_id)  # redelivered
    # The same stall again under a new event id (a replay): the dedup key holds.
    await _publish(runtime, _stalled(org_id, "ref-1"))
    escalated_id = str(uuid.uuid4())
    escalation = ReferralEscalated(**_snapshot(org_id, "ref-1"))
    await _publish(runtime, escalation, escalated_id)
    await _publish(runtime, escalation, escalated_id)
    await _publish(runtime, escalation)  # replayed under a new id: escalates nothing more
    # The next stage of the same referral stalls too: that is a task of its own.
    await _publish(runtime, _stalled(org_id, "ref-1", stage="scheduled", version=5))

    found = await _until(_of_subject(tasks, mint, "ref-1"), lambda items: len(items) == 2)
    stages = {t["title"]: t for t in found}
    stalled = stages["Referral stalled at patient contacted"]
    assert stalled["priority"] == "urgent"
    assert stalled["escalated_at"] is not None
    assert stalled["queue"] == "referral-coordinator@loc-north"
    assert stalled["patient_id"] == "pat-1"
    assert stalled["status"] == "open"
    # Urgent referrals get 4 hours (the defaults), counted from when the stall arrived.
    assert datetime.fromisoformat(stalled["due_at"]) == datetime(2026, 3, 2, 13, 0, tzinfo=UTC)
    later = stages["Referral stalled at scheduled"]
    assert later["priority"] == "high"
    assert later["escalated_at"] is None

    topic = prefixed("careloop.tasks", topic_prefix)
    await wait_for_records(
        tasks_settings.kafka_bootstrap,
        topic,
        lambda rs: sum(1 for r in rs if header(r, "ce_type") == CREATED) >= 2,
    )
    # Everything published before the last stall was applied before it (one partition
    # per patient): the counts below are final.
    records = await read_topic(tasks_settings.kafka_bootstrap, topic)
    seen = sorted(
        (header(r, "ce_subject"), header(r, "ce_type"))
        for r in records
        if header(r, "ce_type") in (CREATED, ESCALATED)
    )
    assert seen == sorted(
        [(stalled["id"], CREATED), (stalled["id"], ESCALATED), (later["id"], CREATED)]
    )
    for record in records:
        body = json.loads(record.value)
        assert "title" not in body  # codes and ids only
    # Made and escalated by the service, on the patient's trail.
    audited = sorted(
        (body["action"], body["resource_id"])
        for body in (json.loads(r.value) for r in records)
        if body.get("actor_id") == "tasks" and body.get("patient_id") == "pat-1"
    )
    assert audited == sorted(
        [("create", stalled["id"]), ("update", stalled["id"]), ("create", later["id"])]
    )


async def test_an_organizations_own_rules_replace_the_defaults(
    tasks: httpx.AsyncClient, tasks_app: FastAPI, mint: Mint, unique_id: str
) -> None:
    runtime: Runtime = tasks_app.state.runtime
    org_id = f"org-{unique_id}"
    defaults = await tasks.get("/tasks/rules", headers=mint())
    assert defaults.status_code == 200
    assert defaults.json()["version"] == 0
    assert [r["id"] for r in defaults.json()["rules"]] == [
        "referral-stalled",
        "referral-escalated",
        "referral-outcome-note",
        "referral-never-scheduled",
        "referral-scheduled-elsewhere",
        "referral-no-report-back",
        "authorization-attention",
        "referral-callback",
        "caregap-outreach-unanswered",
    ]

    broken = await tasks.put(
        "/tasks/rules",
        json={
            "rules": [
                {"id": "x", "on": "careloop.referrals.referral.stalled.v1", "kind": "Call Jane"}
            ]
        },
        headers=mint(),
    )
    assert broken.status_code == 422
    assert broken.headers["content-type"].startswith("application/problem+json")
    assert "no task kind" in broken.json()["detail"]

    own = {
        "rules": [
            {
                "id": "stat-stalls",
                "on": "careloop.referrals.referral.stalled.v1",
                "kind": "referral-stalled",
                "queue_role": "triage-nurse",
                "priority": "urgent",
                "due_in_hours": 1,
                "match": {"urgency": "stat"},
                "subject": {"kind": "referral", "field": "referral_id"},
                "dedup_on": ["stage", "version"],
            }
        ]
    }
    saved = await tasks.put("/tasks/rules", json=own, headers=mint())
    assert saved.status_code == 200, saved.text
    assert saved.json()["version"] == 1
    coordinator = mint(roles=["care_coordinator"])
    assert (
        await tasks.put("/tasks/rules", json=own, headers=mint(roles=["front_desk"]))
    ).status_code == 403
    assert (await tasks.get("/tasks/rules", headers=coordinator)).json()["version"] == 1

    await _publish(runtime, _stalled(org_id, "ref-routine", urgency="routine"))
    await _publish(runtime, _stalled(org_id, "ref-stat", urgency="stat"))
    [made] = await _until(_of_subject(tasks, mint, "ref-stat"), lambda items: len(items) == 1)
    assert made["queue"] == "triage-nurse@loc-north"
    assert made["priority"] == "urgent"
    # Same partition (same patient), published first: already skipped by now.
    assert await _of_subject(tasks, mint, "ref-routine")() == []


async def test_leakage_seen_referrals_and_authorizations_each_get_their_follow_up(
    tasks: httpx.AsyncClient, tasks_app: FastAPI, mint: Mint, unique_id: str
) -> None:
    runtime: Runtime = tasks_app.state.runtime
    org_id = f"org-{unique_id}"
    outbound = {"direction": "outbound", "urgency": "routine", "stage": "received"}
    for referral_id, leakage in (
        ("ref-out-1", "never-scheduled"),
        ("ref-out-2", "scheduled-elsewhere"),
        ("ref-out-3", "no-report-back"),
    ):
        leaked = ReferralLeaked(**_snapshot(org_id, referral_id, **outbound), leakage=leakage)
        await _publish(runtime, leaked)
        await _publish(runtime, leaked)  # the same fact under a new id: one task
    seen = {"stage": "seen", "from_stage": "scheduled", "task_status": "in-progress"}
    await _publish(runtime, ReferralStageChanged(**_snapshot(org_id, "ref-in", **seen)))
    # An outbound referral seen elsewhere needs no note from us.
    await _publish(
        runtime,
        ReferralStageChanged(**_snapshot(org_id, "ref-out-4", **seen, direction="outbound")),
    )
    expiring = AuthorizationExpiring(
        **_snapshot(org_id, "ref-auth"),
        authorization_status="approved",
        authorization_version=2,
        payer="Synthetic Health Plan",
        visits_used=1,
        cause="expiry-near",
    )
    await _publish(runtime, expiring)

    async def every() -> list[dict[str, Any]]:
        response = await tasks.get("/tasks", params={"limit": 100}, headers=mint())
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    found = await _until(every, lambda items: len(items) >= 5)
    await asyncio.sleep(1.0)  # anything wrongly made from the rest would be in by now
    by_subject = {t["subject_id"]: t for t in await every()}
    assert {s: t["title"] for s, t in by_subject.items()} == {
        "ref-out-1": "Outbound referral not scheduled: call the patient",
        "ref-out-2": "Outbound referral went elsewhere: confirm care and records",
        "ref-out-3": "Outbound referral seen, no report back: ask for the note",
        "ref-in": "Write the outcome note of a seen referral",
        "ref-auth": "Referral authorization needs attention: expiry near",
    }
    assert by_subject["ref-in"]["queue"] == "provider@loc-north"
    assert len(found) == 5
