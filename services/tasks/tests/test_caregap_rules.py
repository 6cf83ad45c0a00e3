"""Care-gap outreach nobody answered, on Kafka, becomes one task on the location's
care-coordinator queue by the default rules: one per outreach key however often the fact
arrives (redelivered, or sent again under a new event id), with a title that names no
measure. All ids and names are synthetic."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from careloop_contracts.caregaps import OutreachUnanswered
from careloop_kit.service import Runtime
from careloop_kit.testing.kafka import publish_event
from careloop_kit.testing.services import Mint

from .test_referral_rules import _until

pytestmark = pytest.mark.service

TITLE = "Call a patient who did not answer check-up outreach"
# Words a worklist title must never carry: measures and clinical terms.
CLINICAL_WORDS = ("diabetes", "hba1c", "a1c", "mammogram", "colorectal", "screening", "gap")


def _unanswered(
    org_id: str, campaign_id: str, patient_id: str, **changes: Any
) -> OutreachUnanswered:
    values: dict[str, Any] = {
        "outreach_key": f"{campaign_id}:{patient_id}",
        "campaign_id": campaign_id,
        "patient_id": patient_id,
        "org_id": org_id,
        "location_id": "loc-north",
        "open_gaps": 2,
        "occurred_at": datetime(2026, 3, 2, 8, 0, tzinfo=UTC),
    }
    values.update(changes)
    return OutreachUnanswered(**values)


async def _publish(runtime: Runtime, event: OutreachUnanswered, event_id: str | None = None) -> str:
    """As care-gaps' relay would: the same envelope headers, keyed by patient."""
    return await publish_event(
        runtime.producer, runtime.topic(event.topic), event, event_id=event_id
    )


async def test_unanswered_outreach_makes_one_coordinator_task_per_outreach_key(
    tasks: httpx.AsyncClient, tasks_app: FastAPI, mint: Mint, unique_id: str
) -> None:
    runtime: Runtime = tasks_app.state.runtime
    org_id = f"org-{unique_id}"
    campaign = str(uuid.uuid4())
    first = _unanswered(org_id, campaign, "pat-1")
    event_id = await _publish(runtime, first)
    await _publish(runtime, first, event_id)  # redelivered
    await _publish(runtime, first)  # the same fact under a new event id (a replay)
    # Another patient of the same campaign: a task of its own.
    await _publish(runtime, _unanswered(org_id, campaign, "pat-2"))

    async def of_campaign() -> list[dict[str, Any]]:
        response = await tasks.get(
            "/tasks",
            params={"subject_kind": "caregap-campaign", "subject_id": campaign},
            headers=mint(),
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    await _until(of_campaign, lambda items: len(items) == 2)
    await asyncio.sleep(1.0)  # a duplicate would be in by now
    found = await of_campaign()
    assert sorted(t["patient_id"] for t in found) == ["pat-1", "pat-2"]
    for task in found:
        assert task["kind"] == "caregap-outreach-unanswered"
        assert task["queue"] == "care-coordinator@loc-north"
        assert task["priority"] == "normal"
        assert task["title"] == TITLE
        assert not any(word in task["title"].casefold() for word in CLINICAL_WORDS)
