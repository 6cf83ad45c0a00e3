"""`Prepared` handlers: the consumer runs a batch's `prepare` before the batch
transaction, once per distinct `prepare`, and a failing `prepare` stops nothing.

Real Kafka and PostgreSQL: events are staged in an outbox, relayed, and consumed by an
`EventConsumer` whose handlers write effect rows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careloop_contracts import Envelope, Event, PatientRegistered, PatientUpdated
from careloop_kit.bus.consumer import EventConsumer, Handler, Prepared
from careloop_kit.bus.kafka import ensure_topics, make_consumer, make_producer, topic_name
from careloop_kit.bus.outbox import Outbox, OutboxRelay
from careloop_kit.db import add_platform_tables, make_engine, make_sessionmaker
from careloop_kit.settings import KitSettings

pytestmark = pytest.mark.service

metadata = MetaData()
tables = add_platform_tables(metadata)
effect = Table(
    "prepare_effect",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("patient_id", String(64), nullable=False),
    Column("seen", String(64), nullable=False),
)
ORG = "org-prepare"


@dataclass
class Lookups:
    """What `prepare` read ahead, and in which transaction state it was called."""

    batches: list[list[str]] = field(default_factory=list)
    ready: dict[str, str] = field(default_factory=dict)
    fail: bool = False

    async def prepare(self, events: Sequence[tuple[Envelope, Event]]) -> None:
        ids = [getattr(event, "patient_id", "") for _, event in events]
        self.batches.append(ids)
        if self.fail:
            raise RuntimeError("the other service is down")
        self.ready = {patient_id: f"read-ahead:{patient_id}" for patient_id in ids}


@dataclass
class Rig:
    settings: KitSettings
    sessionmaker: async_sessionmaker[AsyncSession]
    outbox: Outbox
    lookups: Lookups

    async def publish(self, *events: PatientRegistered | PatientUpdated) -> None:
        async with self.sessionmaker() as session, session.begin():
            for event in events:
                await self.outbox.add(session, event, org_id=ORG)
        producer = make_producer(self.settings, client_id="prepare-relay")
        await producer.start()
        try:
            relay = OutboxRelay(self.sessionmaker, tables, producer, service="patients")
            while await relay.publish_batch():
                pass
        finally:
            await producer.stop()

    async def effects(self, count: int) -> list[tuple[str, str]]:
        for _ in range(300):
            async with self.sessionmaker() as session:
                rows = [
                    (r.patient_id, r.seen)
                    for r in await session.execute(select(effect).order_by(effect.c.id))
                ]
            if len(rows) >= count:
                return rows
            await asyncio.sleep(0.1)
        raise AssertionError(f"only {rows}")

    @contextlib.asynccontextmanager
    async def consuming(self, handlers: dict[str, Handler]) -> AsyncIterator[EventConsumer]:
        group = f"{self.settings.topic_prefix}prepare"
        kafka = make_consumer(
            self.settings,
            topic_name(self.settings, "careloop.patients"),
            group_id=group,
            client_id="prepare-consumer",
        )
        dlq = make_producer(self.settings, client_id="prepare-dlq")
        await dlq.start()
        await kafka.start()
        consumer = EventConsumer(
            kafka, dlq, self.sessionmaker, tables, group_id=group, handlers=handlers
        )
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        try:
            yield consumer
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=30)
            await kafka.stop()
            await dlq.stop()


@pytest.fixture
async def rig(
    make_database: Callable[[str], Awaitable[str]], kafka_bootstrap: str, topic_prefix: str
) -> AsyncIterator[Rig]:
    engine = make_engine(await make_database("prepare"))
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    settings = KitSettings(
        environment="test", kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix
    )
    await ensure_topics(settings, [topic_name(settings, "careloop.patients")])
    outbox = Outbox(tables, service="patients", topic_prefix=topic_prefix)
    yield Rig(settings, make_sessionmaker(engine), outbox, Lookups())
    await engine.dispose()


def registered(patient_id: str) -> PatientRegistered:
    return PatientRegistered(patient_id=patient_id, org_id=ORG, registered_at=datetime.now(UTC))


def updated(patient_id: str) -> PatientUpdated:
    return PatientUpdated(
        patient_id=patient_id,
        org_id=ORG,
        changed_fields=("name",),
        version=2,
        updated_at=datetime.now(UTC),
    )


def handlers(lookups: Lookups) -> dict[str, Handler]:
    async def with_lookup(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        patient_id = getattr(event, "patient_id", "")
        # What a handler does when nothing was read ahead: its own read.
        seen = lookups.ready.get(patient_id, f"on-demand:{patient_id}")
        await session.execute(effect.insert().values(patient_id=patient_id, seen=seen))

    async def plain(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        patient_id = getattr(event, "patient_id", "")
        await session.execute(effect.insert().values(patient_id=patient_id, seen="plain"))

    return {
        PatientRegistered.event_type: Prepared(with_lookup, lookups.prepare),
        PatientUpdated.event_type: plain,
    }


async def test_prepare_runs_once_per_batch_with_the_prepared_events_only(rig: Rig) -> None:
    await rig.publish(registered("p1"), updated("p1"), registered("p2"), registered("p3"))

    async with rig.consuming(handlers(rig.lookups)):
        rows = await rig.effects(4)

    assert sorted(rows) == [
        ("p1", "plain"),
        ("p1", "read-ahead:p1"),
        ("p2", "read-ahead:p2"),
        ("p3", "read-ahead:p3"),
    ]
    # However Kafka split the records into batches, each registration was prepared
    # exactly once and the update (a plain handler) never.
    assert sorted(p for batch in rig.lookups.batches for p in batch) == ["p1", "p2", "p3"]


async def test_handlers_sharing_a_prepare_get_one_call_per_batch(rig: Rig) -> None:
    await rig.publish(registered("p1"), updated("p2"))
    both: dict[str, Handler] = {
        PatientRegistered.event_type: handlers(rig.lookups)[PatientRegistered.event_type],
        PatientUpdated.event_type: Prepared(
            handlers(rig.lookups)[PatientRegistered.event_type], rig.lookups.prepare
        ),
    }

    async with rig.consuming(both):
        rows = await rig.effects(2)

    assert sorted(rows) == [("p1", "read-ahead:p1"), ("p2", "read-ahead:p2")]
    assert sorted(p for batch in rig.lookups.batches for p in batch) == ["p1", "p2"]


async def test_a_failing_prepare_leaves_the_handlers_to_read_on_their_own(rig: Rig) -> None:
    rig.lookups.fail = True
    await rig.publish(registered("p1"), registered("p2"))

    async with rig.consuming(handlers(rig.lookups)) as consumer:
        rows = await rig.effects(2)

    assert sorted(rows) == [("p1", "on-demand:p1"), ("p2", "on-demand:p2")]
    assert consumer.stats.dead_lettered == 0
    assert rig.lookups.batches
