"""Stage clocks set per organization and location through the API: the most specific
level wins, what a level leaves out inherits, new clocks follow the settings, and only
staff of a level may set it."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI

from careloop_kit.clock import FrozenClock
from careloop_kit.testing.services import Mint
from careloop_referrals.domain.clocks import (
    InvalidClock,
    StageClock,
    checked_layer,
    clock_for,
    clock_source,
)
from careloop_referrals.domain.referral import Stage, Urgency
from careloop_referrals.handlers.clocks import clock_worker

from .test_referrals_api import VALID_NPIS, _directory_entry, _referral

HOUR = timedelta(hours=1)


@pytest.mark.unit
def test_the_most_specific_layer_sets_the_clock_and_says_so() -> None:
    org = {(Urgency.URGENT, Stage.RECEIVED): StageClock(2 * HOUR, HOUR)}
    location = {(Urgency.URGENT, Stage.RECEIVED): StageClock(HOUR, HOUR / 2)}
    assert clock_for(Urgency.URGENT, Stage.RECEIVED, org, location) == StageClock(HOUR, HOUR / 2)
    assert clock_source(Urgency.URGENT, Stage.RECEIVED, org, location) == 1
    assert clock_source(Urgency.URGENT, Stage.RECEIVED, org, {}) == 0
    assert clock_source(Urgency.ROUTINE, Stage.RECEIVED, org, location) == -1


@pytest.mark.unit
@pytest.mark.parametrize(
    ("stage", "clock", "complaint"),
    [
        (Stage.CLOSED, StageClock(HOUR, HOUR), "no clock"),
        (Stage.CANCELLED, StageClock(HOUR, HOUR), "no clock"),
        (Stage.RECEIVED, StageClock(timedelta(0), HOUR), "longer than zero"),
        (Stage.RECEIVED, StageClock(HOUR, timedelta(days=400)), "longer than a year"),
    ],
)
def test_a_clock_setting_breaking_a_rule_is_refused(
    stage: Stage, clock: StageClock, complaint: str
) -> None:
    with pytest.raises(InvalidClock, match=complaint):
        checked_layer({(Urgency.ROUTINE, stage): clock})


def _clock(body: dict[str, object], urgency: str, stage: str) -> dict[str, object]:
    clocks = body["clocks"]
    assert isinstance(clocks, list)
    return next(c for c in clocks if c["urgency"] == urgency and c["stage"] == stage)


@pytest.mark.service
async def test_location_and_organization_clocks_apply_to_new_stages(
    referrals: httpx.AsyncClient, referrals_app: FastAPI, mint: Mint, clock: FrozenClock
) -> None:
    defaults = (await referrals.get("/referrals/clocks", headers=mint())).json()
    assert len(defaults["clocks"]) == 24  # eight waiting stages, three urgencies
    assert {c["source"] for c in defaults["clocks"]} == {"default"}

    urgent_received = {"urgency": "urgent", "stage": "received"}
    org = await referrals.put(
        "/referrals/clocks",
        json={"clocks": [{**urgent_received, "stall_after_hours": 2, "escalate_after_hours": 1}]},
        headers=mint(),
    )
    assert org.status_code == 200, org.text
    north = await referrals.put(
        "/referrals/clocks",
        json={
            "location_id": "loc-north",
            "clocks": [{**urgent_received, "stall_after_hours": 1, "escalate_after_hours": 0.5}],
        },
        headers=mint(),
    )
    assert north.status_code == 200, north.text
    assert _clock(north.json(), "urgent", "received") == {
        **urgent_received,
        "stall_after_hours": 1.0,
        "escalate_after_hours": 0.5,
        "source": "location",
    }
    south = (await referrals.get("/referrals/clocks?location_id=loc-south", headers=mint())).json()
    assert _clock(south, "urgent", "received")["source"] == "organization"
    assert _clock(south, "urgent", "triaged")["source"] == "default"

    referrer = await _directory_entry(referrals, mint(), VALID_NPIS[0])
    at_north = await _referral(referrals, mint(), referrer, location="loc-north")
    at_south = await _referral(referrals, mint(), referrer, location="loc-south")
    worker = clock_worker(referrals_app.state.runtime)
    clock.advance(HOUR + timedelta(minutes=5))
    assert await worker.fire_due() == 1  # loc-north's own clock: stalled after 1 h
    clock.advance(HOUR)
    assert await worker.fire_due() == 2  # loc-north escalates, loc-south stalls at 2 h
    for created in (at_north, at_south):
        assert (await referrals.get(f"/referrals/{created['id']}", headers=mint())).json()[
            "stage"
        ] == "received"


@pytest.mark.service
async def test_clock_settings_are_checked_and_kept_to_their_level(
    referrals: httpx.AsyncClient, mint: Mint
) -> None:
    closed = await referrals.put(
        "/referrals/clocks",
        json={
            "clocks": [
                {
                    "urgency": "routine",
                    "stage": "outcome-reported",
                    "stall_after_hours": 1,
                    "escalate_after_hours": 1,
                }
            ]
        },
        headers=mint(),
    )
    assert closed.status_code == 422
    assert "no clock" in closed.json()["detail"]
    manager = mint(roles=["location_manager"], loc=["loc-north"])
    assert (
        await referrals.put("/referrals/clocks", json={"clocks": []}, headers=manager)
    ).status_code == 403
    own = await referrals.put(
        "/referrals/clocks", json={"location_id": "loc-north", "clocks": []}, headers=manager
    )
    assert own.status_code == 200, own.text
    other = await referrals.put(
        "/referrals/clocks", json={"location_id": "loc-south", "clocks": []}, headers=manager
    )
    assert other.status_code == 403
    desk = mint(roles=["front_desk"], loc=["loc-north"])
    assert (
        await referrals.put(
            "/referrals/clocks", json={"location_id": "loc-north", "clocks": []}, headers=desk
        )
    ).status_code == 403
    assert (
        await referrals.get(
            "/referrals/clocks",
            headers=mint(roles=["patient"], act="patient", pat="pat-1", loc=[], amr=["pwd"]),
        )
    ).status_code == 403
