"""Two-way confirmation, against real PostgreSQL, Kafka and OpenBao.

Each test publishes `ReplyReceived` (v1) or `ReplyReceivedV2` events on the messaging
topic, as messaging's relay would, waits until the replies consumer has recorded them in
its inbox, and reads what the service staged in its outbox (exactly what its relay
publishes).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from careloop_contracts import Envelope, ReplyReceived, ReplyReceivedV2, to_headers
from careloop_kit.auth import StaticJwksSource
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.bus.kafka import make_producer, topic_name
from careloop_kit.clock import FrozenClock
from careloop_kit.service import Runtime
from careloop_kit.testing.apps import running_app
from careloop_kit.testing.services import Mint
from careloop_scheduling.app import create_app
from careloop_scheduling.settings import SchedulingSettings
from careloop_scheduling.store.tables import metadata, platform, reschedule_offer

from .practice import MONDAY_NINE, NOW, Practice, set_up_practice

pytestmark = pytest.mark.service

CONFIRMED = "careloop.scheduling.appointment.confirmed.v1"
CANCELLED = "careloop.scheduling.appointment.cancelled.v1"
OFFERED = "careloop.scheduling.reschedule.offered.v1"
RESCHEDULED = "careloop.scheduling.appointment.rescheduled.v1"
BOOKED = "careloop.scheduling.appointment.booked.v1"
AUDIT = "careloop.audit.access.recorded.v1"
GROUP = "careloop.scheduling.replies"
# The practice sees patients on Mondays 09:00-12:00 New York time in 30-minute slots;
# the patient holds 09:00, so the next open ones are 09:30, 10:00, 10:30 (EST).
OPTION_1 = MONDAY_NINE + timedelta(minutes=30)
OPTION_2 = MONDAY_NINE + timedelta(minutes=60)
OPTION_3 = MONDAY_NINE + timedelta(minutes=90)
OPTION_4 = MONDAY_NINE + timedelta(minutes=120)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


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

    async def read(self, appointment_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/appointments/{appointment_id}", headers=self.mint())
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def reply(
        self,
        appt: dict[str, Any],
        intent: str,
        choice: int | None = None,
        *,
        org_id: str | None = None,
        event_id: str | None = None,
        via: str | None = None,
    ) -> str:
        """Publish one reply as messaging would and wait until the consumer applied it:
        v1 (an SMS keyword) by default, v2 when `via` is given."""
        event: ReplyReceived | ReplyReceivedV2
        if via is None:
            event = ReplyReceived(
                reply_id=f"SM{uuid4().hex}",
                org_id=org_id or self.org_id,
                patient_id=appt["patient_id"],
                appointment_id=appt["id"],
                message_id="msg-1",
                intent=intent,  # type: ignore[arg-type]
                choice=choice,
                channel="sms",
                received_at=self.clock.now(),
            )
        else:
            event = ReplyReceivedV2(
                reply_id=str(uuid4()),
                org_id=org_id or self.org_id,
                patient_id=appt["patient_id"],
                appointment_id=appt.get("id"),
                message_id="msg-1",
                intent=intent,  # type: ignore[arg-type]
                choice=choice,
                via=via,  # type: ignore[arg-type]
                received_at=self.clock.now(),
            )
        envelope = Envelope(
            type=event.event_type,
            source="/careloop/messaging",
            time=datetime.now(UTC),
            subject=event.partition_key(),
            org_id=event.org_id,
            **({"id": event_id} if event_id else {}),
        )
        producer = make_producer(self.settings, client_id="test-replies")
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
        await self.applied(envelope.id)
        return envelope.id

    async def applied(self, event_id: str, within_s: float = 30.0) -> None:
        """Wait until the replies group recorded the event in its inbox (its effects
        commit in the same transaction)."""
        inbox = platform.inbox
        group = topic_name(self.settings, GROUP)
        deadline = asyncio.get_running_loop().time() + within_s
        while True:
            async with self.runtime.sessionmaker() as session:
                found = await session.scalar(
                    select(inbox.c.event_id).where(
                        inbox.c.consumer_group == group, inbox.c.event_id == event_id
                    )
                )
            if found is not None:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"reply {event_id} not applied within {within_s}s")
            await asyncio.sleep(0.1)

    async def staged(self, event_type: str) -> list[dict[str, Any]]:
        """Events of a type the service wrote to its outbox, oldest first."""
        outbox = platform.outbox
        async with self.runtime.sessionmaker() as session:
            rows = await session.scalars(
                select(outbox.c.payload)
                .where(outbox.c.event_type == event_type)
                .order_by(outbox.c.id)
            )
            return [json.loads(bytes(p)) for p in rows]

    async def offers(self, appointment_id: str) -> list[dict[str, Any]]:
        async with self.runtime.sessionmaker() as session:
            rows = await session.execute(
                select(reschedule_offer)
                .where(reschedule_offer.c.appointment_id == appointment_id)
                # "expired" sorts before "open": the older of two made in one instant.
                .order_by(reschedule_offer.c.created_at, reschedule_offer.c.status)
            )
            return [dict(r._mapping) for r in rows]

    async def pending_timer_keys(self, appointment_id: str) -> list[str]:
        timer = platform.timer
        async with self.runtime.sessionmaker() as session:
            keys = await session.scalars(
                select(timer.c.dedup_key).where(
                    timer.c.dedup_key.startswith(f"{appointment_id}:"),
                    timer.c.fired_at.is_(None),
                    timer.c.cancelled_at.is_(None),
                )
            )
            return sorted(k for k in keys if k is not None)


@pytest.fixture
async def service(
    scheduling_settings: SchedulingSettings,
    issuer: TestTokenIssuer,
    clock: FrozenClock,
    mint: Mint,
    unique_id: str,
) -> AsyncIterator[Service]:
    # The timer worker would only add noise: it scans at start-up, then sleeps an hour.
    settings = scheduling_settings.model_copy(update={"reminder_poll_interval_s": 3600.0})
    app = create_app(settings, clock=clock, jwks=StaticJwksSource(issuer.jwks_document()))
    async with running_app(app) as client:
        yield Service(client, app, clock, mint, settings, f"org-{unique_id}")


@pytest.fixture
async def practice(service: Service) -> Practice:
    return await set_up_practice(
        service.client, service.mint(), display_name="North Clinic", sensitive=False
    )


async def test_a_confirm_reply_confirms_once_with_the_patient_as_actor(
    service: Service, practice: Practice
) -> None:
    appt = await service.book(practice, "pat-c", MONDAY_NINE)

    event_id = await service.reply(appt, "confirm")
    await service.reply(appt, "confirm")  # a second C
    await service.reply(appt, "confirm", event_id=event_id)  # a redelivery

    assert (await service.read(appt["id"]))["confirmation"] == "confirmed"
    confirmed = await service.staged(CONFIRMED)
    assert [e["appointment_id"] for e in confirmed] == [appt["id"]]
    by_patient = [
        a
        for a in await service.staged(AUDIT)
        if a["actor_type"] == "patient" and a["resource_id"] == appt["id"]
    ]
    assert len(by_patient) == 1
    assert by_patient[0]["actor_id"] == "pat-c"
    assert by_patient[0]["org_id"] == service.org_id
    assert by_patient[0]["action"] == "update"
    assert by_patient[0]["resource_type"] == "Appointment"
    assert by_patient[0]["outcome_detail"] == "confirmed by sms reply"


async def test_a_reschedule_reply_offers_the_next_three_slots_then_a_number_rebooks(
    service: Service, practice: Practice
) -> None:
    appt = await service.book(practice, "pat-r", MONDAY_NINE)
    old_keys = await service.pending_timer_keys(appt["id"])
    assert old_keys, "the booking planned reminders and a no-show check"

    await service.reply(appt, "reschedule")
    (offer,) = await service.staged(OFFERED)
    assert offer["options"] == [iso(OPTION_1), iso(OPTION_2), iso(OPTION_3)]
    assert all(datetime.fromisoformat(o) > NOW for o in offer["options"])
    assert offer["appointment_id"] == appt["id"]
    assert offer["patient_id"] == "pat-r"
    assert offer["practice_name"] == "North Clinic"
    assert offer["sensitive_location"] is False
    assert offer["location_time_zone"] == "America/New_York"
    assert offer["expires_at"] == iso(NOW + timedelta(hours=48))

    await service.reply(appt, "choose", 2)

    old = await service.read(appt["id"])
    assert old["status"] == "cancelled"
    new = await service.read(old["rescheduled_to_id"])
    assert (new["status"], new["start_at"]) == ("booked", iso(OPTION_2))
    assert new["rescheduled_from_id"] == appt["id"]
    assert await service.pending_timer_keys(appt["id"]) == []
    assert await service.pending_timer_keys(new["id"]) != []
    (moved,) = await service.staged(RESCHEDULED)
    assert moved["previous_appointment_id"] == appt["id"]
    assert [o["status"] for o in await service.offers(appt["id"])] == ["used"]
    trail = [
        (a["action"], a["resource_id"], a["outcome_detail"])
        for a in await service.staged(AUDIT)
        if a["actor_type"] == "patient" and a["actor_id"] == "pat-r"
    ]
    assert trail == [
        ("read", appt["id"], "reschedule offered by sms reply"),
        ("update", appt["id"], f"rescheduled to {new['id']} by sms reply"),
        ("create", new["id"], f"booked in place of {appt['id']} by sms reply"),
    ]

    # A second number for the used offer changes nothing.
    await service.reply(appt, "choose", 3)
    assert len(await service.staged(RESCHEDULED)) == 1
    assert len(await service.staged(OFFERED)) == 1
    assert (await service.read(new["id"]))["status"] == "booked"


async def test_a_number_after_the_offer_expired_books_nothing_and_offers_again(
    service: Service, practice: Practice
) -> None:
    appt = await service.book(practice, "pat-late", MONDAY_NINE)
    await service.reply(appt, "reschedule")

    service.clock.set(NOW + timedelta(hours=49))
    await service.reply(appt, "choose", 1)

    assert (await service.read(appt["id"]))["status"] == "booked"
    assert await service.staged(RESCHEDULED) == []
    first, second = await service.staged(OFFERED)
    assert second["offer_id"] != first["offer_id"]
    assert second["expires_at"] == iso(NOW + timedelta(hours=49 + 48))
    assert [o["status"] for o in await service.offers(appt["id"])] == ["expired", "open"]


async def test_a_number_for_a_slot_just_taken_double_books_nothing_and_offers_again(
    service: Service, practice: Practice
) -> None:
    appt = await service.book(practice, "pat-slow", MONDAY_NINE)
    await service.reply(appt, "reschedule")
    other = await service.book(practice, "pat-fast", OPTION_2)

    await service.reply(appt, "choose", 2)

    assert (await service.read(appt["id"]))["status"] == "booked"
    assert (await service.read(other["id"]))["status"] == "booked"
    assert await service.staged(RESCHEDULED) == []
    assert await service.pending_timer_keys(appt["id"]) != []
    _, second = await service.staged(OFFERED)
    assert second["options"] == [iso(OPTION_1), iso(OPTION_3), iso(OPTION_4)]
    assert [o["status"] for o in await service.offers(appt["id"])] == ["expired", "open"]

    # The fresh offer works: option 1 of it rebooks.
    await service.reply(appt, "choose", 1)
    assert (await service.read(appt["id"]))["status"] == "cancelled"
    (moved,) = await service.staged(RESCHEDULED)
    assert moved["start_at"] == iso(OPTION_1)


async def test_a_number_out_of_range_books_nothing_and_offers_again(
    service: Service, practice: Practice
) -> None:
    appt = await service.book(practice, "pat-nine", MONDAY_NINE)
    await service.reply(appt, "reschedule")

    await service.reply(appt, "choose", 9)

    assert (await service.read(appt["id"]))["status"] == "booked"
    assert len(await service.staged(OFFERED)) == 2


async def test_replies_naming_another_organizations_appointment_are_ignored(
    service: Service, practice: Practice
) -> None:
    appt = await service.book(practice, "pat-x", MONDAY_NINE)

    await service.reply(appt, "confirm", org_id="org-intruder")
    await service.reply(appt, "reschedule", org_id="org-intruder")
    await service.reply({**appt, "patient_id": "pat-other"}, "confirm")

    assert (await service.read(appt["id"]))["confirmation"] == "unconfirmed"
    assert await service.staged(CONFIRMED) == []
    assert await service.staged(OFFERED) == []


async def test_replies_about_a_cancelled_appointment_change_nothing(
    service: Service, practice: Practice
) -> None:
    appt = await service.book(practice, "pat-gone", MONDAY_NINE)
    cancelled = await service.client.post(
        f"/appointments/{appt['id']}/cancel", json={}, headers=service.mint()
    )
    assert cancelled.status_code == 200, cancelled.text

    await service.reply(appt, "confirm")
    await service.reply(appt, "reschedule")

    assert await service.staged(CONFIRMED) == []
    assert await service.staged(OFFERED) == []


async def test_a_link_confirm_v2_confirms_with_the_link_in_the_trail(
    service: Service, practice: Practice
) -> None:
    appt = await service.book(practice, "pat-link", MONDAY_NINE)

    await service.reply(appt, "confirm", via="link")

    assert (await service.read(appt["id"]))["confirmation"] == "confirmed"
    (confirmed,) = await service.staged(CONFIRMED)
    assert confirmed["appointment_id"] == appt["id"]
    (by_patient,) = [a for a in await service.staged(AUDIT) if a["actor_id"] == "pat-link"]
    assert by_patient["outcome_detail"] == "confirmed by secure link"


async def test_a_cancel_cancels_like_staff_and_ends_the_reminders(
    service: Service, practice: Practice
) -> None:
    appt = await service.book(practice, "pat-cancel", MONDAY_NINE)
    assert await service.pending_timer_keys(appt["id"]) != []

    await service.reply(appt, "cancel", via="link")
    await service.reply(appt, "cancel", via="sms")  # a second answer changes nothing

    cancelled = await service.read(appt["id"])
    assert (cancelled["status"], cancelled["cancel_reason"]) == (
        "cancelled",
        "cancelled by the patient",
    )
    assert await service.pending_timer_keys(appt["id"]) == []
    (event,) = await service.staged(CANCELLED)
    assert (event["appointment_id"], event["status"], event["rescheduled_to_id"]) == (
        appt["id"],
        "cancelled",
        None,
    )
    trail = [
        (a["actor_type"], a["action"], a["resource_id"], a["outcome_detail"])
        for a in await service.staged(AUDIT)
        if a["actor_id"] == "pat-cancel"
    ]
    assert trail == [("patient", "update", appt["id"], "cancelled by secure link")]
    # The freed time can be booked again.
    assert (await service.book(practice, "pat-next", MONDAY_NINE))["status"] == "booked"


async def test_a_cancel_after_the_visit_started_changes_nothing(
    service: Service, practice: Practice
) -> None:
    appt = await service.book(practice, "pat-late-cancel", MONDAY_NINE)
    keys = await service.pending_timer_keys(appt["id"])
    service.clock.set(MONDAY_NINE + timedelta(minutes=5))

    await service.reply(appt, "cancel", via="link")

    assert (await service.read(appt["id"]))["status"] == "booked"
    assert await service.staged(CANCELLED) == []
    assert await service.pending_timer_keys(appt["id"]) == keys


async def test_a_v2_reschedule_and_choose_by_link_rebook(
    service: Service, practice: Practice
) -> None:
    appt = await service.book(practice, "pat-link-r", MONDAY_NINE)

    await service.reply(appt, "reschedule", via="link")
    await service.reply(appt, "choose", 3, via="link")

    old = await service.read(appt["id"])
    assert old["status"] == "cancelled"
    new = await service.read(old["rescheduled_to_id"])
    assert new["start_at"] == iso(OPTION_3)
    details = [
        a["outcome_detail"] for a in await service.staged(AUDIT) if a["actor_id"] == "pat-link-r"
    ]
    assert details == [
        "reschedule offered by secure link",
        f"rescheduled to {new['id']} by secure link",
        f"booked in place of {appt['id']} by secure link",
    ]


async def test_waitlist_accepts_and_answers_without_an_appointment_are_left_alone(
    service: Service, practice: Practice
) -> None:
    appt = await service.book(practice, "pat-accept", MONDAY_NINE)

    await service.reply(appt, "accept", via="sms")
    await service.reply({"patient_id": "pat-accept"}, "confirm", via="link")

    assert (await service.read(appt["id"]))["confirmation"] == "unconfirmed"
    assert await service.staged(CONFIRMED) == []
    assert await service.staged(CANCELLED) == []


async def test_migration_0003_matches_the_offer_table(
    scheduling_settings: SchedulingSettings,
) -> None:
    engine = create_async_engine(scheduling_settings.database_url.get_secret_value())
    try:
        async with engine.connect() as conn:

            def inspect(sync_conn: Any) -> tuple[str | None, list[Any]]:
                context = MigrationContext.configure(sync_conn)
                return context.get_current_revision(), compare_metadata(context, metadata)

            current, diff = await conn.run_sync(inspect)
    finally:
        await engine.dispose()
    # Later migrations follow 0003: the database is at the head, whichever it is.
    assert current is not None
    assert current >= "0003"
    assert [d for d in diff if "reschedule_offer" in repr(d)] == []


async def test_replies_do_nothing_where_two_way_confirmation_is_switched_off(
    service: Service,
) -> None:
    off = await set_up_practice(
        service.client,
        service.mint(),
        "loc-no-replies",
        features={"two_way_confirmation": False},
    )
    on = await set_up_practice(service.client, service.mint(), "loc-replies")
    quiet = await service.book(off, "pat-off", MONDAY_NINE)
    heard = await service.book(on, "pat-on", MONDAY_NINE + timedelta(minutes=30))

    await service.reply(quiet, "confirm")
    await service.reply(quiet, "cancel", via="link")
    await service.reply(heard, "confirm")

    assert (await service.read(quiet["id"]))["confirmation"] == "unconfirmed"
    assert (await service.read(quiet["id"]))["status"] == "booked"
    assert (await service.read(heard["id"]))["confirmation"] == "confirmed"
    assert [e["appointment_id"] for e in await service.staged(CONFIRMED)] == [heard["id"]]
