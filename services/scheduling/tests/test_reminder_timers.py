"""Reminder sequences on durable timers, against real PostgreSQL, Kafka and OpenBao.

The service runs with a frozen clock and a reminder worker that polls once an hour,
so each test drives the worker itself: move the clock, call `fire_due()`, read the
`ReminderDue` events from the topic.
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
from sqlalchemy import func, select, update

from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.clock import FrozenClock
from careloop_kit.service import Runtime
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.kafka import header, wait_for_records
from careloop_kit.testing.services import Mint
from careloop_scheduling.app import create_app
from careloop_scheduling.handlers.reminders import build_reminder_worker, reminder_worker
from careloop_scheduling.settings import SchedulingSettings
from careloop_scheduling.store.tables import appointment, platform

from .practice import Practice, set_up_practice

pytestmark = pytest.mark.service

REMINDER = "careloop.scheduling.reminder.due.v1"
LA, NY = "America/Los_Angeles", "America/New_York"
# Wednesday 2030-02-27 09:00 PST; the LA practice sees patients on Mondays from 09:00.
WEDNESDAY_NINE_LA = datetime(2030, 2, 27, 17, 0, tzinfo=UTC)
MONDAY_NINE_LA = datetime(2030, 3, 4, 17, 0, tzinfo=UTC)  # 5 days later
NEXT_MONDAY_NINE_LA = datetime(2030, 3, 11, 16, 0, tzinfo=UTC)  # PDT from 03-10


def utc(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@dataclass
class Service:
    client: httpx.AsyncClient
    app: FastAPI
    clock: FrozenClock
    mint: Mint
    settings: SchedulingSettings

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def fire(self, at: datetime) -> int:
        """Move the clock to `at` and fire what is due, as one replica's worker would."""
        self.clock.set(at)
        fired: int = await reminder_worker(self.runtime).fire_due()
        return fired

    async def book(
        self,
        practice: Practice,
        patient: str,
        start: datetime,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        response = await self.client.post(
            "/appointments", json=practice.booking(patient, start), headers=headers or self.mint()
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def staged_reminders(self) -> int:
        """ReminderDue rows written to the outbox: what the relay will publish, exactly."""
        outbox = platform.outbox
        async with self.runtime.sessionmaker() as session:
            count = await session.scalar(
                select(func.count()).select_from(outbox).where(outbox.c.event_type == REMINDER)
            )
        return int(count or 0)

    async def reminders(self, kafka_bootstrap: str) -> list[dict[str, Any]]:
        """Every ReminderDue on the topic, once the relay has published all staged ones."""
        expected = await self.staged_reminders()
        topic = f"{self.settings.topic_prefix}careloop.scheduling"
        records = await wait_for_records(
            kafka_bootstrap,
            topic,
            lambda rs: sum(header(r, "ce_type") == REMINDER for r in rs) >= expected,
        )
        return [json.loads(r.value) for r in records if header(r, "ce_type") == REMINDER]


@pytest.fixture
async def service(
    scheduling_settings: SchedulingSettings,
    issuer: TestTokenIssuer,
    clock: FrozenClock,
    mint: Mint,
) -> AsyncIterator[Service]:
    # The worker scans at start-up, then sleeps an hour: the test fires timers itself.
    settings = scheduling_settings.model_copy(update={"reminder_poll_interval_s": 3600.0})
    clock.set(WEDNESDAY_NINE_LA)
    app = create_app(settings, clock=clock, jwks=StaticJwksSource(issuer.jwks_document()))
    async with running_app(app) as client:
        yield Service(client, app, clock, mint, settings)


async def la_practice(service: Service, **location: object) -> Practice:
    return await set_up_practice(
        service.client,
        service.mint(),
        "loc-sunset",
        time_zone=LA,
        display_name="Sunset Family Practice",
        **location,
    )


def touches(events: list[dict[str, Any]], appointment_id: str) -> dict[str, str]:
    """touch -> due_at (UTC, ISO) of one appointment's reminders."""
    mine = [e for e in events if e["appointment_id"] == appointment_id]
    assert len(mine) == len({e["touch_key"] for e in mine}), "a touch was sent twice"
    return {e["touch"]: e["due_at"] for e in mine}


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def test_booking_five_days_out_confirms_at_once_then_reminds_at_ten_local(
    service: Service, kafka_bootstrap: str
) -> None:
    practice = await la_practice(service)
    booked = await service.book(practice, "pat-la", MONDAY_NINE_LA)

    at_booking = await service.fire(WEDNESDAY_NINE_LA)
    early = await service.fire(utc(2030, 3, 1, 17, 59))  # Friday 09:59 PST
    three_days = await service.fire(utc(2030, 3, 1, 18, 0))  # Friday 10:00 PST
    one_day = await service.fire(utc(2030, 3, 3, 18, 0))  # Sunday 10:00 PST
    later = await service.fire(MONDAY_NINE_LA - timedelta(minutes=1))

    assert (at_booking, early, three_days, one_day, later) == (1, 0, 1, 1, 0)
    events = await service.reminders(kafka_bootstrap)
    assert touches(events, booked["id"]) == {
        "confirmation": iso(WEDNESDAY_NINE_LA),
        "3_days_before": iso(utc(2030, 3, 1, 18, 0)),
        "1_day_before": iso(utc(2030, 3, 3, 18, 0)),
    }
    first = next(e for e in events if e["touch"] == "confirmation")
    assert first["touch_key"] == f"{booked['id']}:confirmation"
    assert first["patient_id"] == "pat-la"
    assert first["location_time_zone"] == LA
    assert first["practice_name"] == "Sunset Family Practice"
    assert first["sensitive_location"] is False
    assert first["start_at"] == iso(MONDAY_NINE_LA)


async def test_reminders_across_the_dst_change_stay_at_ten_on_the_wall_clock(
    service: Service, kafka_bootstrap: str
) -> None:
    # Booked Wednesday 2027-03-10 10:00 EST for Tuesday 2027-03-16 09:00 EDT; clocks
    # spring forward on Sunday 03-14.
    booked_at = utc(2027, 3, 10, 15, 0)
    service.clock.set(booked_at)
    practice = await set_up_practice(
        service.client, service.mint(), "loc-east", time_zone=NY, weekday=1
    )
    booked = await service.book(practice, "pat-ny", utc(2027, 3, 16, 13, 0))

    fired = [
        await service.fire(booked_at),
        await service.fire(utc(2027, 3, 13, 14, 59)),
        await service.fire(utc(2027, 3, 13, 15, 0)),  # Saturday 10:00 EST
        await service.fire(utc(2027, 3, 15, 13, 59)),
        await service.fire(utc(2027, 3, 15, 14, 0)),  # Monday 10:00 EDT
    ]

    assert fired == [1, 0, 1, 0, 1]
    assert touches(await service.reminders(kafka_bootstrap), booked["id"]) == {
        "confirmation": iso(booked_at),
        "3_days_before": iso(utc(2027, 3, 13, 15, 0)),
        "1_day_before": iso(utc(2027, 3, 15, 14, 0)),
    }


async def test_a_reschedule_moves_the_reminders_and_the_old_keys_never_fire(
    service: Service, kafka_bootstrap: str
) -> None:
    practice = await la_practice(service)
    old = await service.book(practice, "pat-move", MONDAY_NINE_LA)
    await service.fire(WEDNESDAY_NINE_LA)

    service.clock.set(WEDNESDAY_NINE_LA + timedelta(minutes=30))
    moved = await service.client.post(
        f"/appointments/{old['id']}/reschedule",
        json={"start_at": NEXT_MONDAY_NINE_LA.isoformat()},
        headers=service.mint(),
    )
    assert moved.status_code == 200, moved.text
    new_id = moved.json()["booked"]["id"]

    fired = [
        await service.fire(WEDNESDAY_NINE_LA + timedelta(minutes=30)),  # new confirmation
        await service.fire(utc(2030, 3, 3, 18, 0)),  # the old 3- and 1-day times
        await service.fire(utc(2030, 3, 8, 18, 0)),  # Friday 10:00 PST
        await service.fire(utc(2030, 3, 10, 17, 0)),  # Sunday 10:00 PDT
        await service.fire(NEXT_MONDAY_NINE_LA - timedelta(minutes=1)),
    ]

    assert fired == [1, 0, 1, 1, 0]
    events = await service.reminders(kafka_bootstrap)
    assert touches(events, old["id"]) == {"confirmation": iso(WEDNESDAY_NINE_LA)}
    assert touches(events, new_id) == {
        "confirmation": iso(WEDNESDAY_NINE_LA + timedelta(minutes=30)),
        "3_days_before": iso(utc(2030, 3, 8, 18, 0)),
        "1_day_before": iso(utc(2030, 3, 10, 17, 0)),
    }


async def test_a_cancel_stops_every_pending_reminder(
    service: Service, kafka_bootstrap: str
) -> None:
    practice = await la_practice(service)
    booked = await service.book(practice, "pat-cancel", MONDAY_NINE_LA)
    await service.fire(WEDNESDAY_NINE_LA)

    cancelled = await service.client.post(
        f"/appointments/{booked['id']}/cancel", json={}, headers=service.mint()
    )
    after = await service.fire(MONDAY_NINE_LA - timedelta(minutes=1))

    assert cancelled.status_code == 200, cancelled.text
    assert after == 0
    events = await service.reminders(kafka_bootstrap)
    assert touches(events, booked["id"]) == {"confirmation": iso(WEDNESDAY_NINE_LA)}


async def test_confirming_keeps_the_later_reminders_and_check_in_ends_them(
    service: Service,
) -> None:
    practice = await la_practice(service)
    booked = await service.book(practice, "pat-confirm", MONDAY_NINE_LA)
    await service.fire(WEDNESDAY_NINE_LA)

    confirmed = await service.client.post(
        f"/appointments/{booked['id']}/confirm", headers=service.mint()
    )
    three_days = await service.fire(utc(2030, 3, 1, 18, 0))
    # The worker is never run at Sunday 10:00 here, so the 1-day touch is still pending
    # when the patient checks in (which opens two hours ahead).
    service.clock.set(MONDAY_NINE_LA - timedelta(hours=1))
    arrived = await service.client.post(
        f"/appointments/{booked['id']}/check-in", headers=service.mint()
    )

    assert confirmed.status_code == 200, confirmed.text
    assert three_days == 1
    assert arrived.status_code == 200, arrived.text
    async with service.runtime.sessionmaker() as session:
        pending = await session.scalar(
            select(func.count())
            .select_from(platform.timer)
            .where(
                platform.timer.c.dedup_key.startswith(f"{booked['id']}:"),
                platform.timer.c.fired_at.is_(None),
                platform.timer.c.cancelled_at.is_(None),
            )
        )
    assert pending == 0


async def test_a_timer_that_fires_after_a_cancel_it_raced_publishes_nothing(
    service: Service,
) -> None:
    practice = await la_practice(service)
    booked = await service.book(practice, "pat-race", MONDAY_NINE_LA)
    await service.fire(WEDNESDAY_NINE_LA)
    # The appointment ends without its timers being cancelled (as if the change
    # committed between the worker's claim and its read).
    async with service.runtime.sessionmaker() as session, session.begin():
        await session.execute(
            update(appointment).where(appointment.c.id == booked["id"]).values(status="cancelled")
        )
    before = await service.staged_reminders()

    fired = await service.fire(utc(2030, 3, 1, 18, 0))

    assert fired == 1  # the timer is spent ...
    assert await service.staged_reminders() == before  # ... and nothing was published


async def test_an_appointment_type_can_turn_off_the_three_day_reminder(
    service: Service, kafka_bootstrap: str
) -> None:
    practice = await la_practice(service)
    put = await service.client.put(
        f"/appointment-types/{practice.type_id}/reminder-settings",
        json={"touches": {"3_days_before": {"enabled": False}}},
        headers=service.mint(),
    )
    read = await service.client.get(
        f"/appointment-types/{practice.type_id}/reminder-settings", headers=service.mint()
    )
    booked = await service.book(practice, "pat-type", MONDAY_NINE_LA)

    fired = [
        await service.fire(WEDNESDAY_NINE_LA),
        await service.fire(utc(2030, 3, 1, 18, 0)),
        await service.fire(utc(2030, 3, 3, 18, 0)),
    ]

    assert put.status_code == 200, put.text
    effective = {t["name"]: t["enabled"] for t in read.json()["effective"]["touches"]}
    assert effective == {
        "confirmation": True,
        "3_days_before": False,
        "1_day_before": True,
        "morning_of": False,
    }
    assert fired == [1, 0, 1]
    assert set(touches(await service.reminders(kafka_bootstrap), booked["id"])) == {
        "confirmation",
        "1_day_before",
    }


async def test_location_settings_turn_on_the_morning_of_touch_at_its_hour(
    service: Service, kafka_bootstrap: str
) -> None:
    practice = await la_practice(service)
    put = await service.client.put(
        f"/locations/{practice.location_id}/reminder-settings",
        json={"touches": {"morning_of": {"enabled": True, "send_time": "08:30"}}},
        headers=service.mint(),
    )
    booked = await service.book(practice, "pat-morning", MONDAY_NINE_LA)

    before = await service.fire(utc(2030, 3, 4, 16, 29))
    morning = await service.fire(utc(2030, 3, 4, 16, 30))  # Monday 08:30 PST

    assert put.status_code == 200, put.text
    assert (before, morning) == (3, 1)  # confirmation, 3 days, 1 day; then the morning of
    events = await service.reminders(kafka_bootstrap)
    assert touches(events, booked["id"])["morning_of"] == iso(utc(2030, 3, 4, 16, 30))


async def test_quiet_hours_move_a_late_evening_confirmation_to_eight_local(
    service: Service, kafka_bootstrap: str
) -> None:
    practice = await la_practice(service, sensitive=True)
    late = utc(2030, 2, 28, 6, 0)  # Wednesday 22:00 PST
    service.clock.set(late)
    # Only staff scoped to a sensitive location book there.
    its_own = service.mint(loc=[practice.location_id])
    booked = await service.book(practice, "pat-late", MONDAY_NINE_LA, its_own)

    at_booking = await service.fire(late)
    at_eight = await service.fire(utc(2030, 2, 28, 16, 0))  # Thursday 08:00 PST

    assert (at_booking, at_eight) == (0, 1)
    events = await service.reminders(kafka_bootstrap)
    assert touches(events, booked["id"]) == {"confirmation": iso(utc(2030, 2, 28, 16, 0))}
    # A sensitive location signs with the neutral name, never its own.
    assert events[0]["practice_name"] == "Your care team"
    assert events[0]["sensitive_location"] is True


async def test_two_workers_firing_together_publish_each_reminder_exactly_once(
    service: Service, kafka_bootstrap: str
) -> None:
    practice = await la_practice(service)
    booked = [
        await service.book(practice, f"pat-{i}", MONDAY_NINE_LA + timedelta(minutes=30 * i))
        for i in range(6)
    ]
    service.clock.set(MONDAY_NINE_LA - timedelta(minutes=1))
    first = build_reminder_worker(service.runtime, service.settings)
    second = build_reminder_worker(service.runtime, service.settings)

    counts = await asyncio.gather(first.fire_due(), second.fire_due())

    assert sum(counts) == 6 * 3
    assert await service.staged_reminders() == 6 * 3
    events = await service.reminders(kafka_bootstrap)
    keys = [e["touch_key"] for e in events]
    assert len(keys) == len(set(keys)) == 6 * 3
    for appt in booked:
        assert set(touches(events, appt["id"])) == {
            "confirmation",
            "3_days_before",
            "1_day_before",
        }


@pytest.mark.parametrize(
    "body",
    [
        {"touches": {"every_hour": {"enabled": True}}},
        {"touches": {"confirmation": {"days_before": 2}}},
        {"touches": {"1_day_before": {"days_before": -1}}},
        {"quiet_hours_start": "21:00"},
        {"quiet_hours_start": "21:00", "quiet_hours_end": "21:00"},
        {"send_time": "10:00:00+02:00"},
        {"min_spacing_minutes": 5000},
        {"sms_body": "Hello"},
    ],
)
async def test_invalid_reminder_settings_are_422_problems(
    service: Service, body: dict[str, Any]
) -> None:
    response = await service.client.put("/reminder-settings", json=body, headers=service.mint())

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_reminder_settings_need_manage_and_the_scope_they_change(
    service: Service,
) -> None:
    practice = await la_practice(service)
    manager_elsewhere = service.mint(roles=["location_manager"], loc=["loc-other"])
    front_desk = service.mint(roles=["front_desk"], loc=[practice.location_id], amr=["pwd"])
    body = {"send_time": "09:30", "quiet_hours_start": "21:00", "quiet_hours_end": "07:30"}

    org_by_admin = await service.client.put("/reminder-settings", json=body, headers=service.mint())
    org_by_manager = await service.client.put(
        "/reminder-settings", json=body, headers=manager_elsewhere
    )
    location_by_manager = await service.client.put(
        f"/locations/{practice.location_id}/reminder-settings", json=body, headers=manager_elsewhere
    )
    by_front_desk = await service.client.put(
        f"/locations/{practice.location_id}/reminder-settings", json=body, headers=front_desk
    )
    read = await service.client.get(
        f"/locations/{practice.location_id}/reminder-settings", headers=front_desk
    )
    unknown_location = await service.client.get(
        "/locations/loc-nowhere/reminder-settings", headers=service.mint()
    )

    assert org_by_admin.status_code == 200, org_by_admin.text
    assert org_by_admin.json()["send_time"] == "09:30:00"
    assert (org_by_manager.status_code, location_by_manager.status_code) == (403, 403)
    assert by_front_desk.status_code == 403
    assert read.status_code == 200, read.text
    assert read.json()["send_time"] is None  # the location inherits ...
    assert read.json()["effective"]["send_time"] == "09:30:00"  # ... the organization's
    assert read.json()["effective"]["quiet_hours_end"] == "07:30:00"
    assert unknown_location.status_code == 404
