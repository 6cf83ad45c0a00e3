"""The waitlist against real PostgreSQL, Kafka and OpenBao.

Entries are added over the API; a cancellation (or a reschedule) goes through the
outbox to Kafka and back into the service's own `waitlist` consumer, which offers the
freed time; acceptances are published as messaging would (`ReplyReceivedV2`, intent
`accept`). Assertions read what the service staged in its outbox (exactly what its relay
publishes) and its own tables.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

import careloop_scheduling
from careloop_contracts import Envelope, ReplyReceivedV2, to_headers
from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.bus.kafka import make_producer, topic_name
from careloop_kit.clock import FrozenClock
from careloop_kit.db.migrate import alembic_config
from careloop_kit.service import Runtime
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.services import Mint
from careloop_scheduling.app import create_app
from careloop_scheduling.handlers.reminders import reminder_worker
from careloop_scheduling.settings import SchedulingSettings
from careloop_scheduling.store.tables import (
    metadata,
    platform,
    waitlist_entry,
    waitlist_offer,
    waitlist_slot,
)
from careloop_scheduling.usecases.waitlist import waitlist_work

from .practice import MONDAY_NINE, NOW, Practice, set_up_practice

pytestmark = pytest.mark.service

OFFERED = "careloop.scheduling.waitlist.slot_offered.v1"
CLOSED = "careloop.scheduling.waitlist.offer_closed.v1"
BOOKED = "careloop.scheduling.appointment.booked.v1"
CANCELLED = "careloop.scheduling.appointment.cancelled.v1"
RESCHEDULED = "careloop.scheduling.appointment.rescheduled.v1"
AUDIT = "careloop.audit.access.recorded.v1"
GROUP = "careloop.scheduling.waitlist"
MIGRATIONS = Path(careloop_scheduling.__file__).parent / "migrations"

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    """Poll until `done(probe())`; fails after 30 s with the last value."""
    deadline = asyncio.get_running_loop().time() + 30.0
    while True:
        value = await probe()
        if done(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never reached: {value!r}")
        await asyncio.sleep(0.1)


@dataclass
class Service:
    client: httpx.AsyncClient
    app: FastAPI
    clock: FrozenClock
    mint: Mint
    settings: SchedulingSettings
    org_id: str

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def book(self, practice: Practice, patient: str, start: datetime) -> dict[str, Any]:
        response = await self.client.post(
            "/appointments", json=practice.booking(patient, start), headers=self.mint()
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def wait_list(
        self, practice: Practice, patient: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> dict[str, Any]:
        body = {
            "patient_id": patient,
            "location_id": practice.location_id,
            "appointment_type_id": practice.type_id,
            "earliest_date": "2030-03-01",
            "latest_date": "2030-03-31",
            **extra,
        }
        response = await self.client.post("/waitlist", json=body, headers=headers or self.mint())
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def cancel(self, appointment_id: str) -> None:
        response = await self.client.post(
            f"/appointments/{appointment_id}/cancel", json={}, headers=self.mint()
        )
        assert response.status_code == 200, response.text

    async def staged(self, event_type: str) -> list[dict[str, Any]]:
        outbox = platform.outbox
        async with self.runtime.sessionmaker() as session:
            rows = await session.scalars(
                select(outbox.c.payload)
                .where(outbox.c.event_type == event_type)
                .order_by(outbox.c.id)
            )
            return [json.loads(bytes(p)) for p in rows]

    async def consumed(self, event_type: str) -> None:
        """Wait until the waitlist group has applied every event of this type the service
        staged (its effects commit with the inbox mark)."""
        outbox, inbox = platform.outbox, platform.inbox
        group = topic_name(self.settings, GROUP)

        async def pending() -> int:
            async with self.runtime.sessionmaker() as session:
                staged = set(
                    await session.scalars(
                        select(outbox.c.event_id).where(outbox.c.event_type == event_type)
                    )
                )
                done = set(
                    await session.scalars(
                        select(inbox.c.event_id).where(
                            inbox.c.consumer_group == group, inbox.c.event_type == event_type
                        )
                    )
                )
            return len(staged - done)

        await eventually(pending, lambda n: n == 0)

    async def offers_staged(self, count: int) -> list[dict[str, Any]]:
        return await eventually(lambda: self.staged(OFFERED), lambda es: len(es) >= count)

    async def rows(self, table: Any, **where: Any) -> list[dict[str, Any]]:
        query = select(table)
        for name, value in where.items():
            query = query.where(table.c[name] == value)
        async with self.runtime.sessionmaker() as session:
            return [dict(r._mapping) for r in (await session.execute(query)).all()]

    def accept_event(self, offer: dict[str, Any], patient: str | None = None) -> ReplyReceivedV2:
        return ReplyReceivedV2(
            reply_id=f"SM{uuid4().hex}",
            org_id=self.org_id,
            patient_id=patient or offer["patient_id"],
            message_id=f"msg-{uuid4().hex[:8]}",
            offer_id=offer["offer_id"],
            intent="accept",
            via="sms",
            received_at=self.clock.now(),
        )

    async def accept(self, offer: dict[str, Any], patient: str | None = None) -> None:
        """Publish the patient's `Y` as messaging would and wait until it is applied."""
        event = self.accept_event(offer, patient)
        envelope = Envelope(
            type=event.event_type,
            source="/careloop/messaging",
            time=datetime.now(UTC),
            subject=event.partition_key(),
            org_id=event.org_id,
        )
        producer = make_producer(self.settings, client_id="test-waitlist")
        await producer.start()
        try:
            await producer.send_and_wait(
                f"{self.settings.topic_prefix}{event.topic}",
                value=event.to_json(),
                key=event.partition_key().encode(),
                headers=to_headers(envelope),
            )
        finally:
            await producer.stop()
        inbox, group = platform.inbox, topic_name(self.settings, GROUP)

        async def applied() -> bool:
            async with self.runtime.sessionmaker() as session:
                found = await session.scalar(
                    select(inbox.c.event_id).where(
                        inbox.c.consumer_group == group, inbox.c.event_id == envelope.id
                    )
                )
            return found is not None

        await eventually(applied, bool)

    async def appointments_of(self, patient: str) -> list[dict[str, Any]]:
        response = await self.client.get(
            "/appointments", params={"patient_id": patient}, headers=self.mint()
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items


@pytest.fixture
async def service(
    scheduling_settings: SchedulingSettings,
    issuer: TestTokenIssuer,
    clock: FrozenClock,
    mint: Mint,
    unique_id: str,
) -> AsyncIterator[Service]:
    # The timer worker scans at start-up, then sleeps: tests fire due timers themselves.
    settings = scheduling_settings.model_copy(
        update={
            "reminder_poll_interval_s": 3600.0,
            "waitlist_offer_batch": 2,
            "waitlist_offer_ttl_minutes": 60,
        }
    )
    app = create_app(settings, clock=clock, jwks=StaticJwksSource(issuer.jwks_document()))
    async with running_app(app) as client:
        yield Service(client, app, clock, mint, settings, f"org-{unique_id}")


@pytest.fixture
async def practice(service: Service) -> Practice:
    return await set_up_practice(
        service.client, service.mint(), display_name="North Clinic", sensitive=False
    )


async def other_type(service: Service) -> str:
    kind = await service.client.post(
        "/appointment-types",
        json={"name": "New patient", "duration_minutes": 30, "patient_kind": "new"},
        headers=service.mint(),
    )
    assert kind.status_code == 201, kind.text
    type_id: str = kind.json()["id"]
    return type_id


async def test_a_cancelled_time_is_offered_to_matching_entries_in_waitlist_order(
    service: Service, practice: Practice
) -> None:
    appt = await service.book(practice, "pat-leaving", MONDAY_NINE)
    # Entries that do not suit a Monday 09:00 visit of this type at this location.
    await service.wait_list(practice, "pat-tuesdays", weekdays=[1])
    await service.wait_list(practice, "pat-afternoons", parts_of_day=["afternoon"])
    await service.wait_list(
        practice, "pat-later", earliest_date="2030-03-05", latest_date="2030-03-20"
    )
    await service.wait_list(
        practice, "pat-other-type", appointment_type_id=await other_type(service)
    )
    first = await service.wait_list(practice, "pat-first")
    second = await service.wait_list(practice, "pat-second", weekdays=[0], parts_of_day=["morning"])
    third = await service.wait_list(practice, "pat-third")
    assert first["position"] < second["position"] < third["position"]

    await service.cancel(appt["id"])

    await service.offers_staged(2)
    await service.consumed(CANCELLED)
    offers = await service.staged(OFFERED)
    assert [o["patient_id"] for o in offers] == ["pat-first", "pat-second"]
    assert [o["entry_id"] for o in offers] == [first["id"], second["id"]]
    for offer in offers:
        assert offer["start_at"] == MONDAY_NINE.isoformat().replace("+00:00", "Z")
        assert offer["practice_name"] == "North Clinic"
        assert offer["location_time_zone"] == "America/New_York"
        assert offer["expires_at"] == (NOW + timedelta(minutes=60)).isoformat().replace(
            "+00:00", "Z"
        )
        # Ids and times only: nothing names the provider or the visit type.
        assert "provider_id" not in offer
        assert "appointment_type_id" not in offer
    statuses = {
        e["patient_id"]: e["status"]
        for e in (await service.client.get("/waitlist", headers=service.mint())).json()["items"]
    }
    assert statuses["pat-first"] == statuses["pat-second"] == "offered"
    assert statuses["pat-third"] == statuses["pat-tuesdays"] == "waiting"
    system_audits = [
        a for a in await service.staged(AUDIT) if a["actor_id"] == "scheduling-waitlist"
    ]
    assert {a["patient_id"] for a in system_audits} == {"pat-first", "pat-second"}


async def test_a_reschedule_frees_the_old_time_for_the_waitlist(
    service: Service, practice: Practice
) -> None:
    appt = await service.book(practice, "pat-moving", MONDAY_NINE)
    await service.wait_list(practice, "pat-waiting")

    moved = await service.client.post(
        f"/appointments/{appt['id']}/reschedule",
        json={"start_at": (MONDAY_NINE + timedelta(hours=2)).isoformat()},
        headers=service.mint(),
    )
    assert moved.status_code == 200, moved.text

    (offer,) = await service.offers_staged(1)
    assert offer["patient_id"] == "pat-waiting"
    assert offer["start_at"] == MONDAY_NINE.isoformat().replace("+00:00", "Z")
    # The cancellation and the reschedule event both report the move: one slot.
    await service.consumed(CANCELLED)
    await service.consumed(RESCHEDULED)
    assert len(await service.rows(waitlist_slot, source_appointment_id=appt["id"])) == 1
    assert len(await service.staged(OFFERED)) == 1


async def test_the_first_acceptance_books_and_the_others_are_told_it_is_gone(
    service: Service, practice: Practice
) -> None:
    appt = await service.book(practice, "pat-leaving", MONDAY_NINE)
    await service.wait_list(practice, "pat-a")
    await service.wait_list(practice, "pat-b")
    await service.cancel(appt["id"])
    offer_a, offer_b = await service.offers_staged(2)

    await service.accept(offer_a)
    await service.accept(offer_a)  # a second Y: nothing more
    await service.accept(offer_b)  # too late

    (booked,) = [a for a in await service.appointments_of("pat-a") if a["status"] == "booked"]
    assert booked["start_at"] == appt["start_at"]
    assert booked["provider_id"] == practice.provider_id
    assert await service.appointments_of("pat-b") == []
    closed = [(c["patient_id"], c["reason"]) for c in await service.staged(CLOSED)]
    assert closed == [("pat-a", "accepted"), ("pat-b", "taken"), ("pat-b", "answered_late")]
    (accepted,) = [c for c in await service.staged(CLOSED) if c["reason"] == "accepted"]
    assert accepted["appointment_id"] == booked["id"]
    entries = {
        e["patient_id"]: e
        for e in (
            await service.client.get(
                "/waitlist", params={"status": ["booked", "waiting"]}, headers=service.mint()
            )
        ).json()["items"]
    }
    assert entries["pat-a"]["status"] == "booked"
    assert entries["pat-a"]["booked_appointment_id"] == booked["id"]
    assert entries["pat-b"]["status"] == "waiting"  # still on the list for the next time
    by_patient = [
        a
        for a in await service.staged(AUDIT)
        if a["actor_type"] == "patient" and a["resource_id"] == booked["id"]
    ]
    assert [(a["actor_id"], a["action"], a["resource_type"]) for a in by_patient] == [
        ("pat-a", "create", "Appointment")
    ]
    assert by_patient[0]["purpose_of_use"] == "PATRQT"
    (slot,) = await service.rows(waitlist_slot, source_appointment_id=appt["id"])
    assert (slot["status"], slot["appointment_id"]) == ("filled", booked["id"])
    # Booked through the booking path: its reminders and no-show check are planned.
    timers = await service.rows(platform.timer)
    assert any(str(t["dedup_key"]).startswith(f"{booked['id']}:") for t in timers)
    assert [e["appointment_id"] for e in await service.staged(BOOKED)][-1] == booked["id"]


async def test_two_acceptances_at_once_book_exactly_once(
    service: Service, practice: Practice
) -> None:
    appt = await service.book(practice, "pat-leaving", MONDAY_NINE)
    await service.wait_list(practice, "pat-a")
    await service.wait_list(practice, "pat-b")
    await service.cancel(appt["id"])
    offer_a, offer_b = await service.offers_staged(2)
    runtime = service.runtime

    async def accept(offer: dict[str, Any]) -> None:
        # Each in its own transaction, as two consumer replicas would.
        async with runtime.sessionmaker() as session, session.begin():
            event = service.accept_event(offer)
            await waitlist_work(runtime, session, None).accept(event, offer["offer_id"])

    await asyncio.gather(accept(offer_a), accept(offer_b))

    booked = [
        a
        for patient in ("pat-a", "pat-b")
        for a in await service.appointments_of(patient)
        if a["status"] == "booked"
    ]
    assert len(booked) == 1
    winner = booked[0]["patient_id"]
    loser = "pat-b" if winner == "pat-a" else "pat-a"
    reasons = {(c["patient_id"], c["reason"]) for c in await service.staged(CLOSED)}
    assert (winner, "accepted") in reasons
    assert (loser, "taken") in reasons or (loser, "answered_late") in reasons
    offers = {o["patient_id"]: o["status"] for o in await service.rows(waitlist_offer)}
    assert offers == {winner: "accepted", loser: "taken"}


async def test_an_unanswered_round_expires_and_the_next_in_line_get_the_time(
    service: Service, practice: Practice
) -> None:
    appt = await service.book(practice, "pat-leaving", MONDAY_NINE)
    for patient in ("pat-1", "pat-2", "pat-3"):
        await service.wait_list(practice, patient)
    await service.cancel(appt["id"])
    first_round = await service.offers_staged(2)
    assert [o["patient_id"] for o in first_round] == ["pat-1", "pat-2"]

    service.clock.advance(timedelta(minutes=61))
    await reminder_worker(service.runtime).fire_due()

    offers = await service.staged(OFFERED)
    assert [o["patient_id"] for o in offers] == ["pat-1", "pat-2", "pat-3"]
    expired = [(c["patient_id"], c["reason"]) for c in await service.staged(CLOSED)]
    assert expired == [("pat-1", "expired"), ("pat-2", "expired")]

    # A late Y to the first round books nothing and is answered "gone"; the third
    # patient's Y books.
    await service.accept(first_round[0])
    await service.accept(offers[2])
    assert await service.appointments_of("pat-1") == []
    (booked,) = await service.appointments_of("pat-3")
    assert booked["start_at"] == appt["start_at"]
    closed = [(c["patient_id"], c["reason"]) for c in await service.staged(CLOSED)]
    assert closed[2:] == [("pat-1", "answered_late"), ("pat-3", "accepted")]

    # Nobody is left once the slot is filled: another expiry changes nothing.
    service.clock.advance(timedelta(minutes=61))
    await reminder_worker(service.runtime).fire_due()
    assert len(await service.staged(OFFERED)) == 3


async def test_the_last_round_lapses_the_slot_and_offers_never_reach_the_start(
    service: Service, practice: Practice
) -> None:
    appt = await service.book(practice, "pat-leaving", MONDAY_NINE)
    await service.wait_list(practice, "pat-only")
    await service.cancel(appt["id"])
    await service.offers_staged(1)

    service.clock.advance(timedelta(minutes=61))
    await reminder_worker(service.runtime).fire_due()

    (slot,) = await service.rows(waitlist_slot, source_appointment_id=appt["id"])
    assert slot["status"] == "lapsed"
    (entry,) = await service.rows(waitlist_entry, patient_id="pat-only")
    assert entry["status"] == "waiting"

    # A time freed too close to its start is not offered at all.
    service.clock.set(MONDAY_NINE - timedelta(minutes=30))
    late = await service.book(practice, "pat-late", MONDAY_NINE + timedelta(hours=1))
    service.clock.set(MONDAY_NINE + timedelta(minutes=20))
    await service.cancel(late["id"])
    await service.consumed(CANCELLED)
    assert await service.rows(waitlist_slot, source_appointment_id=late["id"]) == []


async def test_an_entry_with_an_appointment_is_moved_earlier_and_frees_its_old_time(
    service: Service, practice: Practice
) -> None:
    leaving = await service.book(practice, "pat-leaving", MONDAY_NINE)
    later = await service.book(practice, "pat-mover", MONDAY_NINE + timedelta(hours=2))
    await service.wait_list(practice, "pat-mover", appointment_id=later["id"])
    await service.wait_list(practice, "pat-next")
    await service.cancel(leaving["id"])
    offers = await service.offers_staged(2)
    assert [o["patient_id"] for o in offers] == ["pat-mover", "pat-next"]
    assert offers[0]["appointment_id"] == later["id"]

    await service.accept(offers[0])

    mover = {a["id"]: a for a in await service.appointments_of("pat-mover")}
    assert mover[later["id"]]["status"] == "cancelled"
    new_id = mover[later["id"]]["rescheduled_to_id"]
    assert mover[new_id]["start_at"] == leaving["start_at"]
    # The mover's old 11:00 time is freed in turn: the next in line is offered it too.
    offers = await service.offers_staged(3)
    assert offers[2]["patient_id"] == "pat-next"
    assert offers[2]["start_at"] == later["start_at"].replace("+00:00", "Z")
    audits = [
        (a["action"], a["resource_id"])
        for a in await service.staged(AUDIT)
        if a["actor_type"] == "patient" and a["actor_id"] == "pat-mover"
    ]
    assert audits == [("update", later["id"]), ("create", new_id)]


async def test_patients_manage_their_own_entries_only(
    service: Service, practice: Practice, mint: Mint
) -> None:
    own = mint(roles=["patient"], act="patient", loc=[], pat="pat-self")
    other = await service.wait_list(practice, "pat-other")

    mine = await service.wait_list(practice, "pat-self", headers=own)
    assert mine["status"] == "waiting"
    refused = await service.client.post(
        "/waitlist",
        json={
            "patient_id": "pat-other",
            "location_id": practice.location_id,
            "appointment_type_id": practice.type_id,
            "earliest_date": "2030-03-01",
            "latest_date": "2030-03-31",
        },
        headers=own,
    )
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"

    listed = await service.client.get("/waitlist", headers=own)
    assert [e["id"] for e in listed.json()["items"]] == [mine["id"]]
    other_list = await service.client.get(
        "/waitlist", params={"patient_id": "pat-other"}, headers=own
    )
    assert other_list.status_code == 403

    assert (await service.client.delete(f"/waitlist/{other['id']}", headers=own)).status_code == 403
    removed = await service.client.delete(f"/waitlist/{mine['id']}", headers=own)
    assert removed.status_code == 200, removed.text
    assert removed.json()["status"] == "removed"
    again = await service.client.delete(f"/waitlist/{mine['id']}", headers=own)
    assert again.status_code == 409
    assert (await service.client.get("/waitlist", headers=own)).json()["items"] == []
    audits = [
        a
        for a in await service.staged(AUDIT)
        if a["resource_type"] == "WaitlistEntry" and a["actor_type"] == "patient"
    ]
    assert {a["action"] for a in audits} >= {"create", "query", "delete"}
    assert all(a["phi_categories"] == ["clinical"] for a in audits)


async def test_a_removed_entry_withdraws_its_open_offer(
    service: Service, practice: Practice
) -> None:
    appt = await service.book(practice, "pat-leaving", MONDAY_NINE)
    entry = await service.wait_list(practice, "pat-a")
    await service.cancel(appt["id"])
    (offer,) = await service.offers_staged(1)

    removed = await service.client.delete(f"/waitlist/{entry['id']}", headers=service.mint())
    assert removed.status_code == 200, removed.text
    await service.accept(offer)

    assert await service.appointments_of("pat-a") == []
    closed = [(c["patient_id"], c["reason"]) for c in await service.staged(CLOSED)]
    assert closed == [("pat-a", "withdrawn"), ("pat-a", "answered_late")]


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"earliest_date": "2030-03-20", "latest_date": "2030-03-10"}, 422),
        ({"earliest_date": "2030-01-01", "latest_date": "2030-02-01"}, 422),
        ({"weekdays": [9]}, 422),
        ({"parts_of_day": ["midnight"]}, 422),
        ({"appointment_type_id": "no-such-type"}, 404),
        ({"provider_id": "no-such-provider"}, 404),
        ({"location_id": "loc-unknown"}, 422),
        ({"appointment_id": "no-such-appointment"}, 404),
        ({"unexpected": 1}, 422),
    ],
)
async def test_bad_entries_are_refused_as_problems(
    service: Service, practice: Practice, changes: dict[str, Any], status: int
) -> None:
    body = {
        "patient_id": "pat-x",
        "location_id": practice.location_id,
        "appointment_type_id": practice.type_id,
        "earliest_date": "2030-03-01",
        "latest_date": "2030-03-31",
        **changes,
    }
    response = await service.client.post("/waitlist", json=body, headers=service.mint())
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_the_same_waitlist_twice_is_a_conflict(service: Service, practice: Practice) -> None:
    await service.wait_list(practice, "pat-x")
    body = {
        "patient_id": "pat-x",
        "location_id": practice.location_id,
        "appointment_type_id": practice.type_id,
        "earliest_date": "2030-03-05",
        "latest_date": "2030-03-25",
    }
    response = await service.client.post("/waitlist", json=body, headers=service.mint())
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"


async def test_migration_0004_matches_the_waitlist_tables(
    scheduling_settings: SchedulingSettings,
) -> None:
    dsn = scheduling_settings.database_url.get_secret_value()
    head = ScriptDirectory.from_config(alembic_config(MIGRATIONS, dsn)).get_current_head()
    engine = create_async_engine(dsn)
    try:
        async with engine.connect() as conn:

            def inspect(sync_conn: Any) -> tuple[str | None, list[Any]]:
                context = MigrationContext.configure(sync_conn)
                return context.get_current_revision(), compare_metadata(context, metadata)

            current, diff = await conn.run_sync(inspect)
    finally:
        await engine.dispose()
    assert current == head
    assert [d for d in diff if "waitlist" in repr(d)] == []
