"""Automatic no-show marking and the attendance history, against real PostgreSQL,
Kafka and OpenBao.

The service runs with a frozen clock and a timer worker that polls once an hour, so
each test drives the worker itself: move the clock, call `fire_due()`, then read the
appointment, the outbox and the durable timers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import FrozenClock
from careloop_kit.service import Runtime
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.services import Mint
from careloop_scheduling.app import create_app
from careloop_scheduling.domain.appointment import Appointment, AppointmentStatus
from careloop_scheduling.domain.attendance import PastVisit, summarize
from careloop_scheduling.handlers.reminders import reminder_worker
from careloop_scheduling.settings import SchedulingSettings
from careloop_scheduling.store.tables import platform
from careloop_scheduling.usecases.no_show import SYSTEM_ACTOR

from .practice import MONDAY_NINE, Practice, set_up_practice

NO_SHOW = "careloop.scheduling.appointment.no_show.v1"
CHECKED_IN = "careloop.scheduling.appointment.checked_in.v1"
AUDIT = "careloop.audit.access.recorded.v1"
GRACE = timedelta(minutes=30)  # the documented default


@dataclass
class Service:
    client: httpx.AsyncClient
    app: FastAPI
    clock: FrozenClock
    mint: Mint

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def fire(self, at: datetime) -> int:
        """Move the clock to `at` and fire what is due, as one replica's worker would."""
        self.clock.set(at)
        fired: int = await reminder_worker(self.runtime).fire_due()
        return fired

    async def book(self, practice: Practice, patient: str, start: datetime) -> str:
        response = await self.client.post(
            "/appointments", json=practice.booking(patient, start), headers=self.mint()
        )
        assert response.status_code == 201, response.text
        appointment_id: str = response.json()["id"]
        return appointment_id

    async def step(self, appointment_id: str, action: str) -> httpx.Response:
        return await self.client.post(
            f"/appointments/{appointment_id}/{action}",
            json={} if action == "cancel" else None,
            headers=self.mint(),
        )

    async def status(self, appointment_id: str) -> str:
        response = await self.client.get(f"/appointments/{appointment_id}", headers=self.mint())
        assert response.status_code == 200, response.text
        status: str = response.json()["status"]
        return status

    async def staged(self, event_type: str, appointment_id: str) -> list[dict[str, Any]]:
        """Events of a type staged in the outbox for one appointment (or patient)."""
        outbox = platform.outbox
        async with self.runtime.sessionmaker() as session:
            payloads = await session.scalars(
                select(outbox.c.payload).where(outbox.c.event_type == event_type)
            )
            events = [json.loads(p) for p in payloads]
        keys = ("appointment_id", "resource_id", "patient_id")
        return [e for e in events if appointment_id in (e.get(k) for k in keys)]

    async def no_show_timer(self, appointment_id: str) -> Any:
        timer = platform.timer
        async with self.runtime.sessionmaker() as session:
            return (
                await session.execute(
                    select(timer).where(timer.c.dedup_key == f"{appointment_id}:no-show")
                )
            ).first()


@pytest.fixture
async def service(
    scheduling_settings: SchedulingSettings,
    issuer: TestTokenIssuer,
    clock: FrozenClock,
    mint: Mint,
) -> AsyncIterator[Service]:
    # The worker scans at start-up, then sleeps an hour: the test fires timers itself.
    settings = scheduling_settings.model_copy(update={"reminder_poll_interval_s": 3600.0})
    app = create_app(settings, clock=clock, jwks=StaticJwksSource(issuer.jwks_document()))
    async with running_app(app) as client:
        yield Service(client, app, clock, mint)


@pytest.fixture
async def ny(service: Service) -> Practice:
    return await set_up_practice(service.client, service.mint())


@pytest.mark.service
async def test_a_visit_not_checked_in_after_the_grace_becomes_a_no_show(
    service: Service, ny: Practice
) -> None:
    appt = await service.book(ny, "pat-missed", MONDAY_NINE)

    await service.fire(MONDAY_NINE + GRACE - timedelta(minutes=1))
    still_waiting = await service.status(appt)
    await service.fire(MONDAY_NINE + GRACE)

    assert still_waiting == "booked"
    assert await service.status(appt) == "noshow"
    [event] = await service.staged(NO_SHOW, appt)
    assert (event["patient_id"], event["status"]) == ("pat-missed", "noshow")
    system = [a for a in await service.staged(AUDIT, appt) if a["actor_type"] == "system"]
    assert len(system) == 1
    assert system[0]["actor_id"] == SYSTEM_ACTOR
    assert (system[0]["action"], system[0]["patient_id"]) == ("update", "pat-missed")
    assert system[0]["phi_categories"] == ["clinical"]
    timer = await service.no_show_timer(appt)
    assert timer.fired_at is not None
    assert timer.cancelled_at is None
    # Firing again changes nothing: the timer is spent.
    assert await service.fire(MONDAY_NINE + timedelta(hours=5)) == 0
    assert len(await service.staged(NO_SHOW, appt)) == 1


@pytest.mark.service
@pytest.mark.parametrize("action", ["check-in", "cancel"])
async def test_a_checked_in_or_cancelled_visit_is_never_marked(
    service: Service, ny: Practice, action: str
) -> None:
    appt = await service.book(ny, f"pat-{action}", MONDAY_NINE)
    service.clock.set(MONDAY_NINE - timedelta(minutes=10))
    assert (await service.step(appt, action)).status_code == 200

    await service.fire(MONDAY_NINE + timedelta(hours=3))

    assert await service.status(appt) == ("arrived" if action == "check-in" else "cancelled")
    assert await service.staged(NO_SHOW, appt) == []
    timer = await service.no_show_timer(appt)
    assert timer.cancelled_at is not None
    assert timer.fired_at is None


@pytest.mark.service
async def test_the_staff_endpoint_and_the_timer_share_the_path(
    service: Service, ny: Practice
) -> None:
    appt = await service.book(ny, "pat-manual", MONDAY_NINE)
    service.clock.set(MONDAY_NINE + timedelta(minutes=10))

    marked = await service.step(appt, "no-show")
    await service.fire(MONDAY_NINE + timedelta(hours=1))

    assert marked.status_code == 200, marked.text
    assert len(await service.staged(NO_SHOW, appt)) == 1
    assert (await service.no_show_timer(appt)).cancelled_at is not None


@pytest.mark.service
async def test_a_reschedule_checks_only_the_new_visit_after_its_own_grace(
    service: Service, ny: Practice
) -> None:
    old = await service.book(ny, "pat-moved", MONDAY_NINE)
    moved = await service.client.post(
        f"/appointments/{old}/reschedule",
        json={"start_at": (MONDAY_NINE + timedelta(hours=2)).isoformat()},
        headers=service.mint(),
    )
    assert moved.status_code == 200, moved.text
    new = moved.json()["booked"]["id"]

    await service.fire(MONDAY_NINE + GRACE)  # the old check's time
    after_old_time = (await service.status(old), await service.status(new))
    await service.fire(MONDAY_NINE + timedelta(hours=2) + GRACE - timedelta(seconds=1))
    just_before = await service.status(new)
    await service.fire(MONDAY_NINE + timedelta(hours=2) + GRACE)

    assert after_old_time == ("cancelled", "booked")
    assert just_before == "booked"
    assert await service.status(new) == "noshow"
    assert await service.status(old) == "cancelled"
    assert await service.staged(NO_SHOW, old) == []
    assert (await service.no_show_timer(old)).cancelled_at is not None


@pytest.mark.service
async def test_a_check_in_racing_the_timer_ends_in_exactly_one_outcome(
    service: Service, ny: Practice
) -> None:
    starts = [MONDAY_NINE + timedelta(minutes=30 * i) for i in range(6)]
    appts = [await service.book(ny, f"pat-race-{i}", s) for i, s in enumerate(starts)]
    service.clock.set(starts[-1] + timedelta(hours=1))  # every check is due

    # Whichever side takes an appointment's row lock first wins it (here mostly the
    # check-ins, which makes the worker meet a held lock and retry); the assertions
    # hold for either winner, and the next test pins the other order.
    results = await asyncio.gather(
        reminder_worker(service.runtime).fire_due(),
        *(service.step(a, "check-in") for a in appts),
    )
    # A check that met a check-in holding the row retries later: let it.
    for minutes in (1, 2, 4, 8, 16):
        await service.fire(starts[-1] + timedelta(hours=1, minutes=minutes))

    check_ins: list[httpx.Response] = list(results[1:])  # type: ignore[arg-type]
    for appt, check_in in zip(appts, check_ins, strict=True):
        status = await service.status(appt)
        no_shows = await service.staged(NO_SHOW, appt)
        arrivals = await service.staged(CHECKED_IN, appt)
        if status == "arrived":
            assert check_in.status_code == 200, check_in.text
            assert (len(arrivals), len(no_shows)) == (1, 0)
            assert (await service.no_show_timer(appt)).cancelled_at is not None
        else:
            assert status == "noshow"
            assert check_in.status_code == 409, check_in.text
            assert check_in.json()["current_status"] == "noshow"
            assert (len(arrivals), len(no_shows)) == (0, 1)
            assert (await service.no_show_timer(appt)).fired_at is not None


@pytest.mark.service
async def test_a_check_in_after_the_timer_marked_the_visit_is_refused(
    service: Service, ny: Practice
) -> None:
    # The other order of the race above, made deterministic: the timer commits first.
    appt = await service.book(ny, "pat-too-late", MONDAY_NINE)
    await service.fire(MONDAY_NINE + GRACE)

    late = await service.step(appt, "check-in")

    assert late.status_code == 409, late.text
    assert late.json()["current_status"] == "noshow"
    assert await service.status(appt) == "noshow"
    assert await service.staged(CHECKED_IN, appt) == []


async def attendance(
    service: Service, patient: str, headers: dict[str, str] | None = None, **params: Any
) -> httpx.Response:
    return await service.client.get(
        f"/patients/{patient}/attendance",
        params=params,
        headers=service.mint() if headers is None else headers,
    )


@pytest.mark.service
async def test_attendance_counts_a_mix_of_outcomes(service: Service, ny: Practice) -> None:
    patient = "pat-history"
    weeks = [MONDAY_NINE + timedelta(weeks=w) for w in range(5)]
    came, missed, cancelled_early, cancelled_late, moved = [
        await service.book(ny, patient, start) for start in weeks
    ]
    assert (await service.step(cancelled_early, "cancel")).status_code == 200
    service.clock.set(weeks[0] - timedelta(minutes=5))
    assert (await service.step(came, "check-in")).status_code == 200
    service.clock.set(weeks[3] - timedelta(hours=23))
    assert (await service.step(cancelled_late, "cancel")).status_code == 200
    service.clock.set(weeks[4] - timedelta(hours=2))
    rescheduled = await service.client.post(
        f"/appointments/{moved}/reschedule",
        json={"start_at": (weeks[4] + timedelta(hours=1)).isoformat()},
        headers=service.mint(),
    )
    assert rescheduled.status_code == 200, rescheduled.text
    upcoming = await service.book(ny, patient, weeks[4] + timedelta(weeks=1))

    # Marks week 1 and the rescheduled visit; the check-in ended week 0's check.
    await service.fire(weeks[4] + timedelta(hours=3))
    response = await attendance(service, patient)
    before_week_two = await attendance(service, patient, as_of=weeks[1].isoformat())

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["counts"] == {
        "total": 6,
        "attended": 1,
        "no_show": 2,
        "cancelled": 3,
        "rescheduled": 1,
        "late_cancelled": 2,
        "unresolved": 0,
        "no_show_rate": pytest.approx(2 / 3),
    }
    assert [i["id"] for i in body["items"]][:2] == [came, missed]
    assert upcoming not in {i["id"] for i in body["items"]}
    assert [i["status"] for i in body["items"]] == [
        "arrived",
        "noshow",
        "cancelled",
        "cancelled",
        "cancelled",
        "noshow",
    ]
    assert body["not_listed"] == 0
    # As of week 1's start, only week 0 counts: features from strictly earlier visits.
    assert before_week_two.json()["counts"]["total"] == 1
    assert before_week_two.json()["counts"]["attended"] == 1


@pytest.mark.service
async def test_attendance_authorization(service: Service, ny: Practice) -> None:
    other = await set_up_practice(service.client, service.mint(), "loc-south")
    patient = "pat-two-sites"
    here = await service.book(ny, patient, MONDAY_NINE)
    await service.book(other, patient, MONDAY_NINE + timedelta(hours=1))
    await service.fire(MONDAY_NINE + timedelta(hours=3))  # both missed

    north_desk = service.mint(roles=["front_desk"], loc=[ny.location_id])
    elsewhere = service.mint(roles=["front_desk"], loc=["loc-east"])
    own = service.mint(roles=["patient"], act="patient", loc=[], pat=patient)
    someone_else = service.mint(roles=["patient"], act="patient", loc=[], pat="pat-other")
    auditor = service.mint(roles=["auditor"])

    scoped = await attendance(service, patient, north_desk)
    assert scoped.status_code == 200, scoped.text
    # Counted at every location, listed only where the desk works.
    assert scoped.json()["counts"]["no_show"] == 2
    assert [i["id"] for i in scoped.json()["items"]] == [here]
    assert scoped.json()["not_listed"] == 1
    mine = await attendance(service, patient, own)
    assert mine.status_code == 200, mine.text
    assert len(mine.json()["items"]) == 2
    assert (await attendance(service, patient, elsewhere)).status_code == 403
    assert (await attendance(service, patient, someone_else)).status_code == 403
    assert (await attendance(service, patient, auditor)).status_code == 403
    assert (await attendance(service, patient, {})).status_code == 401
    reads = [a for a in await service.staged(AUDIT, patient) if a["action"] == "read"]
    outcomes = [a["outcome"] for a in reads]
    assert outcomes.count("success") >= 2
    assert outcomes.count("denied") >= 2


def domain_appointment(
    id: str, start_at: datetime, status: AppointmentStatus = AppointmentStatus.BOOKED
) -> Appointment:
    return Appointment(
        id=id,
        org_id="org-1",
        patient_id="pat-1",
        provider_id="dr-a",
        location_id="loc-1",
        appointment_type_id="type-1",
        start_at=start_at,
        end_at=start_at + timedelta(minutes=30),
        status=status,
    )


@pytest.mark.unit
def test_summary_counts_only_visits_started_in_the_window() -> None:
    start = datetime(2030, 5, 6, 14, 0, tzinfo=UTC)
    visits = [
        PastVisit(domain_appointment("a", start, AppointmentStatus.NOSHOW), start),
        # Cancelled two hours ahead: late.
        PastVisit(
            domain_appointment("b", start + timedelta(days=1), AppointmentStatus.CANCELLED),
            start + timedelta(days=1, hours=-2),
        ),
        # Starts after `as_of`: not counted.
        PastVisit(domain_appointment("c", start + timedelta(days=9)), start),
    ]

    summary = summarize(visits, since=start, as_of=start + timedelta(days=2))

    assert (summary.total, summary.no_show, summary.cancelled, summary.late_cancelled) == (
        2,
        1,
        1,
        1,
    )
    assert summary.no_show_rate == 1.0
    assert summarize([], since=start, as_of=start).no_show_rate is None
