from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careloop_kit.clock import FrozenClock
from careloop_kit.db import add_platform_tables, make_engine, make_sessionmaker
from careloop_kit.db.timers import DueTimer, Timers, TimerWorker

pytestmark = pytest.mark.service

metadata = MetaData()
tables = add_platform_tables(metadata)
effect = Table(
    "timer_effect",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("timer_id", Integer, nullable=False),
    Column("label", String(50), nullable=False),
)
START = datetime(2031, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
async def db(
    make_database: Callable[[str], Awaitable[str]],
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(await make_database("timers"))
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def record(session: AsyncSession, timer: DueTimer) -> None:
    await session.execute(effect.insert().values(timer_id=timer.id, label=timer.payload["label"]))


async def effects(db: async_sessionmaker[AsyncSession]) -> list[str]:
    async with db() as session:
        return list(await session.scalars(select(effect.c.label).order_by(effect.c.id)))


async def test_a_timer_fires_once_when_its_time_comes(db: async_sessionmaker[AsyncSession]) -> None:
    clock = FrozenClock(START)
    timers = Timers(tables, clock=clock)
    worker = TimerWorker(db, tables, {"remind": record}, clock=clock)
    async with db() as session, session.begin():
        await timers.schedule(session, "remind", START + timedelta(days=3), {"label": "t-3d"})

    assert await worker.fire_due() == 0
    clock.advance(timedelta(days=3))
    assert await worker.fire_due() == 1
    assert await worker.fire_due() == 0
    assert await effects(db) == ["t-3d"]


async def test_dedup_cancel_and_reschedule(db: async_sessionmaker[AsyncSession]) -> None:
    clock = FrozenClock(START)
    timers = Timers(tables, clock=clock)
    worker = TimerWorker(db, tables, {"remind": record}, clock=clock)
    async with db() as session, session.begin():
        first = await timers.schedule(
            session, "remind", START, {"label": "a"}, dedup_key="appt-1:-1d"
        )
        again = await timers.schedule(
            session, "remind", START, {"label": "b"}, dedup_key="appt-1:-1d"
        )
        await timers.schedule(session, "remind", START, {"label": "c"}, dedup_key="appt-2:-1d")
        await timers.schedule(session, "remind", START, {"label": "d"}, dedup_key="appt-3:-1d")
    async with db() as session, session.begin():
        assert await timers.cancel(session, "appt-2:-1d")
        assert await timers.reschedule(session, "appt-3:-1d", START + timedelta(hours=2))

    assert first is not None
    assert again is None
    assert await worker.fire_due() == 1
    clock.advance(timedelta(hours=2))
    assert await worker.fire_due() == 1
    assert await effects(db) == ["a", "d"]


async def test_a_timer_in_a_rolled_back_transaction_never_exists(
    db: async_sessionmaker[AsyncSession],
) -> None:
    clock = FrozenClock(START)
    timers = Timers(tables, clock=clock)

    async def failing_state_change() -> None:
        async with db() as session, session.begin():
            await timers.schedule(session, "remind", START, {"label": "ghost"})
            raise RuntimeError("the state change failed")

    with pytest.raises(RuntimeError):
        await failing_state_change()

    assert await TimerWorker(db, tables, {"remind": record}, clock=clock).fire_due() == 0


async def test_replicas_share_due_timers_without_firing_any_twice(
    db: async_sessionmaker[AsyncSession],
) -> None:
    clock = FrozenClock(START)
    timers = Timers(tables, clock=clock)
    async with db() as session, session.begin():
        for i in range(300):
            await timers.schedule(session, "remind", START, {"label": f"t{i}"})
    workers = [TimerWorker(db, tables, {"remind": record}, clock=clock) for _ in range(3)]

    counts = await asyncio.gather(*(w.fire_due() for w in workers))

    assert sum(counts) == 300
    assert sum(1 for c in counts if c > 0) >= 2, counts
    async with db() as session:
        total, distinct = (
            await session.execute(
                select(func.count(), func.count(func.distinct(effect.c.timer_id)))
            )
        ).one()
    assert (total, distinct) == (300, 300)


async def test_failing_timer_retries_later_then_is_parked_with_its_error(
    db: async_sessionmaker[AsyncSession],
) -> None:
    clock = FrozenClock(START)
    timers = Timers(tables, clock=clock)

    async def broken(session: AsyncSession, timer: DueTimer) -> None:
        raise ValueError("provider down")

    worker = TimerWorker(
        db,
        tables,
        {"remind": broken},
        clock=clock,
        max_attempts=2,
        retry_delay=timedelta(minutes=1),
    )
    async with db() as session, session.begin():
        await timers.schedule(session, "remind", START, {"label": "x"})

    assert await worker.fire_due() == 0
    assert worker.failed == 1
    assert await worker.fire_due() == 0  # not due again until the retry delay passes
    assert worker.failed == 1
    clock.advance(timedelta(minutes=1))
    await worker.fire_due()
    assert worker.failed == 2
    async with db() as session:
        row = (await session.execute(select(tables.timer))).one()
    assert row.attempts == 2
    assert row.cancelled_at is not None
    assert "provider down" in row.last_error


async def test_a_failing_timer_in_a_batch_does_not_roll_back_the_others(
    db: async_sessionmaker[AsyncSession],
) -> None:
    clock = FrozenClock(START)
    timers = Timers(tables, clock=clock)

    async def picky(session: AsyncSession, timer: DueTimer) -> None:
        await record(session, timer)
        if timer.payload["label"] == "bad":
            # Its own effect was already written: the savepoint must take it back.
            raise ValueError("this one cannot be sent")

    worker = TimerWorker(
        db, tables, {"remind": picky}, clock=clock, batch_size=10, retry_delay=timedelta(minutes=5)
    )
    async with db() as session, session.begin():
        for label in ("a", "b", "bad", "c", "d"):
            await timers.schedule(session, "remind", START, {"label": label}, dedup_key=label)

    assert await worker.fire_due() == 4
    assert sorted(await effects(db)) == ["a", "b", "c", "d"]
    assert (worker.fired, worker.failed) == (4, 1)
    async with db() as session:
        rows = {
            row.dedup_key: row
            for row in await session.execute(select(tables.timer).order_by(tables.timer.c.id))
        }
    assert all(rows[k].fired_at == START and rows[k].attempts == 1 for k in "abcd")
    bad = rows["bad"]
    assert bad.fired_at is None
    assert bad.cancelled_at is None
    assert bad.attempts == 1
    assert bad.due_at == START + timedelta(minutes=5)
    assert "cannot be sent" in bad.last_error


async def test_a_timer_locked_by_another_worker_is_skipped_not_waited_for(
    db: async_sessionmaker[AsyncSession],
) -> None:
    clock = FrozenClock(START)
    timers = Timers(tables, clock=clock)
    async with db() as session, session.begin():
        for i in range(5):
            await timers.schedule(session, "remind", START, {"label": f"t{i}"}, dedup_key=f"k{i}")
    worker = TimerWorker(db, tables, {"remind": record}, clock=clock, batch_size=3)

    async with db() as other, other.begin():
        # Another replica's batch holds this row: the worker takes the rest.
        await other.execute(
            select(tables.timer.c.id).where(tables.timer.c.dedup_key == "k0").with_for_update()
        )
        assert await worker.fire_due() == 4
    assert await worker.fire_due() == 1
    assert sorted(await effects(db)) == ["t0", "t1", "t2", "t3", "t4"]


async def test_batching_workers_never_fire_one_timer_twice(
    db: async_sessionmaker[AsyncSession],
) -> None:
    clock = FrozenClock(START)
    timers = Timers(tables, clock=clock)
    async with db() as session, session.begin():
        for i in range(200):
            await timers.schedule(session, "remind", START, {"label": f"t{i}"})

    async def slow_record(session: AsyncSession, timer: DueTimer) -> None:
        await record(session, timer)
        # Yield mid-batch so the workers' transactions overlap.
        await asyncio.sleep(0)

    workers = [
        TimerWorker(db, tables, {"remind": slow_record}, clock=clock, batch_size=7)
        for _ in range(2)
    ]

    counts = await asyncio.gather(*(w.fire_due() for w in workers))

    assert sum(counts) == 200
    assert all(c > 0 for c in counts), counts
    async with db() as session:
        total, distinct = (
            await session.execute(
                select(func.count(), func.count(func.distinct(effect.c.timer_id)))
            )
        ).one()
        unfired = await session.scalar(
            select(func.count()).select_from(tables.timer).where(tables.timer.c.fired_at.is_(None))
        )
    assert (total, distinct, unfired) == (200, 200, 0)
