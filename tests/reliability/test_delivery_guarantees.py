"""Delivery guarantees under real process crashes (ARCHITECTURE.md section 4).

The outbox relay and the idempotent consumer run as subprocesses
(``careloop_kit.testing.crashrig``) and are SIGKILLed at random moments. Afterwards the
full history is checked: every staged event id has exactly one effect in the business
table (which has no unique constraint, so a duplicate effect would show), none is
missing, and the outbox is fully marked sent. Duplicates on the topic are allowed and
reported.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from careloop_contracts import Envelope, PatientRegistered, dead_letter_topic, to_headers
from careloop_kit.bus.consumer import DLQ_HEADERS
from careloop_kit.bus.dlq import DeadLetter, list_dead_letters, replay_dead_letters
from careloop_kit.bus.kafka import ensure_topics, make_producer, topic_name
from careloop_kit.bus.outbox import Outbox
from careloop_kit.db import make_engine, make_sessionmaker
from careloop_kit.settings import KitSettings
from careloop_kit.testing.crashrig import crash_effect, metadata, tables
from careloop_kit.testing.kafka import CRASH_TEST_SESSION_TIMEOUT_MS, header, read_topic

pytestmark = [pytest.mark.service, pytest.mark.crash]

RIG = [sys.executable, "-m", "careloop_kit.testing.crashrig"]
SERVICE = "patients"
TOPIC = "careloop.patients"
GROUP = "careloop.crash.effects"
ORG = "org-crash"


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path


@dataclass
class Rig:
    """Starts crash-rig workers and makes sure none outlives the test."""

    directory: Path
    dsn: str
    bootstrap: str
    prefix: str
    workers: list[Worker] = field(default_factory=list)
    started: int = 0

    def _start(self, name: str, *args: str) -> Worker:
        self.started += 1
        stdout = self.directory / f"{self.started:03d}-{name}.out"
        stderr = self.directory / f"{self.started:03d}-{name}.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            env = {
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                # A killed consumer's partitions move to its successor after this.
                "CARELOOP_KAFKA_SESSION_TIMEOUT_MS": str(CRASH_TEST_SESSION_TIMEOUT_MS),
            }
            process = subprocess.Popen([*RIG, *args], stdout=out, stderr=err, env=env)
        worker = Worker(name, process, stdout, stderr)
        self.workers.append(worker)
        return worker

    def relay(self, batch_size: int = 500) -> Worker:
        return self._start(
            "relay",
            "relay",
            *("--db", self.dsn, "--bootstrap", self.bootstrap),
            *("--service", SERVICE, "--prefix", self.prefix),
            *("--batch-size", str(batch_size)),
        )

    def consumer(self, fail_marker: str | None = None) -> Worker:
        extra = ("--fail-on-marker", fail_marker) if fail_marker else ()
        return self._start(
            "consume",
            "consume",
            *("--db", self.dsn, "--bootstrap", self.bootstrap),
            *("--topic", TOPIC, "--group", GROUP, "--prefix", self.prefix),
            *extra,
        )

    async def ready(self, worker: Worker, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while b"ready" not in worker.stdout.read_bytes():
            if worker.process.poll() is not None:
                raise AssertionError(
                    f"{worker.name} exited with {worker.process.returncode}:\n"
                    + worker.stderr.read_text(errors="replace")[-3000:]
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{worker.name} not ready within {timeout_s}s")
            await asyncio.sleep(0.05)

    def check_alive(self, worker: Worker) -> None:
        if worker.process.poll() is not None:
            raise AssertionError(
                f"{worker.name} died on its own with {worker.process.returncode}:\n"
                + worker.stderr.read_text(errors="replace")[-3000:]
            )

    def kill(self, worker: Worker) -> None:
        self.check_alive(worker)
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=10)

    async def terminate(self, worker: Worker) -> int:
        """SIGTERM and wait: a clean shutdown exits with status 0."""
        self.check_alive(worker)
        worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while worker.process.poll() is None:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(timeout=10)
            raise AssertionError(f"{worker.name} ignored SIGTERM for 20s")
        return worker.process.returncode

    def close(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(timeout=10)


@dataclass
class Env:
    rig: Rig
    settings: KitSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    @property
    def topic(self) -> str:
        return topic_name(self.settings, TOPIC)

    async def effects(self) -> tuple[int, int]:
        async with self.sessions() as session:
            row = (
                await session.execute(
                    select(func.count(), func.count(func.distinct(crash_effect.c.event_id)))
                )
            ).one()
        return int(row[0]), int(row[1])

    async def unsent(self) -> int:
        async with self.sessions() as session:
            count = await session.scalar(
                select(func.count()).where(tables.outbox.c.sent_at.is_(None))
            )
        return int(count or 0)

    async def wait_for(
        self, what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = 60.0
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not await check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
            for worker in self.rig.workers[-2:]:
                if worker.process.poll() not in (None, 0, -signal.SIGKILL):
                    self.rig.check_alive(worker)
            await asyncio.sleep(0.1)


@pytest.fixture
def rig(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str) -> Iterator[Rig]:
    the_rig = Rig(tmp_path, "", kafka_bootstrap, topic_prefix)
    try:
        yield the_rig
    finally:
        # Synchronous teardown: the workers die even if the test or the async teardown fails.
        the_rig.close()


@pytest.fixture
async def env(
    rig: Rig,
    make_database: Callable[[str], Awaitable[str]],
    kafka_bootstrap: str,
    topic_prefix: str,
) -> AsyncIterator[Env]:
    rig.dsn = await make_database("crashrig")
    settings = KitSettings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    engine = make_engine(rig.dsn, pool_size=2)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await ensure_topics(
        settings, [topic_name(settings, TOPIC), topic_name(settings, dead_letter_topic(GROUP))]
    )
    try:
        yield Env(rig, settings, engine, make_sessionmaker(engine))
    finally:
        rig.close()
        await engine.dispose()


async def stage(env: Env, count: int, *, per_transaction: int = 1000) -> list[str]:
    """Stage ``count`` PatientRegistered events through the outbox; returns their ids."""
    outbox = Outbox(tables, service=SERVICE, topic_prefix=env.settings.topic_prefix)
    ids: list[str] = []
    now = datetime.now(UTC)
    for start in range(0, count, per_transaction):
        async with env.sessions() as session, session.begin():
            for _ in range(min(per_transaction, count - start)):
                patient_id = f"p-{uuid4().hex}"
                envelope = await outbox.add(
                    session,
                    PatientRegistered(patient_id=patient_id, org_id=ORG, registered_at=now),
                    key=patient_id,
                    org_id=ORG,
                )
                ids.append(envelope.id)
    return ids


async def assert_exactly_once(env: Env, ids: list[str]) -> None:
    async with env.sessions() as session:
        applied = (await session.scalars(select(crash_effect.c.event_id))).all()
    assert len(applied) == len(set(applied)), "an event was applied twice"
    assert set(applied) == set(ids), (
        f"missing {len(set(ids) - set(applied))}, unexpected {len(set(applied) - set(ids))}"
    )
    assert await env.unsent() == 0


def report(capsys: pytest.CaptureFixture[str], message: str) -> None:
    with capsys.disabled():
        print(f"\n[reliability] {message}", flush=True)


async def test_relay_and_consumer_crashes_apply_every_event_exactly_once(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    total, waves, kills_each = 10_000, 5, 4
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    began = time.monotonic()
    rig = env.rig

    ids = await stage(env, total // waves)
    consumer = rig.consumer()
    # Small batches keep the relay busy long enough to be killed mid-stream.
    relay = rig.relay(batch_size=50)
    await asyncio.gather(rig.ready(consumer), rig.ready(relay))

    relay_kills: list[int] = []  # unsent rows at each kill
    consumer_kills: list[int] = []  # effects at each kill

    async def crash_relay() -> None:
        nonlocal relay
        for _ in range(kills_each):
            # A fresh wave of committed rows, then a kill while the relay works through it.
            wave = total // waves
            ids.extend(await stage(env, wave))
            # Kill it mid-wave: once it has started publishing this wave, at a random point
            # (polling a database count: there is no event to wait on).
            deadline = time.monotonic() + 10
            while await env.unsent() >= wave and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            await asyncio.sleep(rng.uniform(0.0, 0.03))
            relay_kills.append(await env.unsent())
            rig.kill(relay)
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            relay = rig.relay(batch_size=50)
            await rig.ready(relay)

    async def crash_consumer() -> None:
        nonlocal consumer
        for _ in range(kills_each):
            applied, _ = await env.effects()
            # Kill it once it is applying again (a restarted member waits for the rebalance).
            deadline = time.monotonic() + 20
            while (await env.effects())[0] == applied:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            consumer_kills.append((await env.effects())[0])
            rig.kill(consumer)
            consumer = rig.consumer()
            await rig.ready(consumer)

    await asyncio.gather(crash_relay(), crash_consumer())
    chaos_s = time.monotonic() - began
    drain_from = (await env.effects())[0]

    async def all_applied() -> bool:
        return (await env.effects())[1] >= total and await env.unsent() == 0

    await env.wait_for("every event applied", all_applied, timeout_s=120)
    drain_s = time.monotonic() - began - chaos_s
    assert await rig.terminate(relay) == 0
    assert await rig.terminate(consumer) == 0

    count, distinct = await env.effects()
    assert (count, distinct) == (total, total)
    await assert_exactly_once(env, ids)

    on_topic = await read_topic(env.settings.kafka_bootstrap, env.topic, timeout_s=30)
    topic_ids = [header(record, "ce_id") for record in on_topic]
    assert set(topic_ids) == set(ids)
    duplicates = len(topic_ids) - len(set(topic_ids))
    report(
        capsys,
        f"relay/consumer crash: seed={seed} events={total} "
        f"relay SIGKILLs={len(relay_kills)} (unsent rows at each: {relay_kills}) "
        f"consumer SIGKILLs={len(consumer_kills)} (effects at each: {consumer_kills}) "
        f"records on topic={len(topic_ids)} duplicates on topic={duplicates} "
        f"effects={count} distinct={distinct} in {time.monotonic() - began:.1f}s "
        f"(crashes {chaos_s:.1f}s, then {total - drain_from} effects in {drain_s:.1f}s)",
    )
    assert len(relay_kills) >= 4
    assert len(consumer_kills) >= 4
    # The kills really happened mid-stream, not after the work was done.
    assert sum(1 for unsent in relay_kills if unsent > 0) >= 3, relay_kills
    assert sum(1 for applied in consumer_kills if applied < total) >= 3, consumer_kills


async def test_events_committed_while_no_relay_runs_are_delivered_once_one_starts(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    rig = env.rig
    # The service committed its state and outbox rows, then died before publishing.
    ids = await stage(env, 300)
    consumer = rig.consumer()
    await rig.ready(consumer)
    await asyncio.sleep(1.0)
    assert await env.effects() == (0, 0)
    assert await read_topic(env.settings.kafka_bootstrap, env.topic) == []
    assert await env.unsent() == 300

    relay = rig.relay()
    await rig.ready(relay)

    async def delivered() -> bool:
        return (await env.effects())[1] >= len(ids) and await env.unsent() == 0

    await env.wait_for("the staged events", delivered)
    assert await rig.terminate(relay) == 0
    assert await rig.terminate(consumer) == 0
    assert await env.effects() == (300, 300)
    await assert_exactly_once(env, ids)
    report(capsys, "commit-then-crash: 300 staged rows delivered once after relay start")


def registered_record(patient_id: str) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    event = PatientRegistered(patient_id=patient_id, org_id=ORG, registered_at=datetime.now(UTC))
    envelope = Envelope.for_event(event, source="/careloop/patients", time=datetime.now(UTC))
    return envelope.id, event.to_json(), to_headers(envelope)


async def test_poison_events_are_dead_lettered_and_replayed_once(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    rig = env.rig
    marker = "failme"
    key = b"one-partition"  # the same key: every record lands on one partition, in order
    consumer = rig.consumer(fail_marker=marker)
    await rig.ready(consumer)

    good_ids: list[str] = []
    offsets: dict[str, int] = {}
    producer = make_producer(env.settings, client_id="poison-test")
    await producer.start()
    try:

        async def send(label: str, value: bytes, headers: list[tuple[str, bytes]]) -> None:
            meta = await producer.send_and_wait(env.topic, value=value, key=key, headers=headers)
            offsets[label] = meta.offset

        async def send_good() -> None:
            event_id, value, headers = registered_record(f"good-{uuid4().hex[:8]}")
            good_ids.append(event_id)
            await send(event_id, value, headers)

        await send_good()
        await send("garbage", b"\x00not json", [("ce_id", b"\xff\xfe"), ("ce_type", b"??")])
        await send_good()
        unknown_id, value, headers = registered_record(f"unknown-{uuid4().hex[:8]}")
        unknown_headers = [
            (k, b"careloop.patients.patient.exploded.v1" if k == "ce_type" else v)
            for k, v in headers
        ]
        await send("unknown", value, unknown_headers)
        await send_good()
        failing_id, value, headers = registered_record(f"patient-{marker}-{uuid4().hex[:8]}")
        await send("failing", value, headers)
        await send_good()
    finally:
        await producer.stop()

    async def good_applied() -> bool:
        return (await env.effects())[1] >= len(good_ids)

    await env.wait_for("the good events", good_applied)

    async def dead_letters(count: int) -> list[DeadLetter]:
        letters: list[DeadLetter] = []

        async def enough() -> bool:
            nonlocal letters
            letters = await list_dead_letters(env.settings, GROUP)
            return len(letters) >= count

        await env.wait_for(f"{count} dead letters", enough)
        return letters

    letters = await dead_letters(3)
    assert len(letters) == 3
    garbage, unknown, failing = letters
    assert [d.original_offset for d in letters] == [
        offsets["garbage"],
        offsets["unknown"],
        offsets["failing"],
    ]
    assert [d.reason for d in letters] == ["poison", "poison", "retries-exhausted"]
    assert {d.original_topic for d in letters} == {env.topic}
    assert {d.original_partition for d in letters} == {letters[0].original_partition}
    assert {d.group for d in letters} == {topic_name(env.settings, GROUP)}
    assert {d.key for d in letters} == {key.decode()}
    assert all(d.error and d.failed_at for d in letters)
    assert not any(d.replayed for d in letters)
    assert "UTF-8" in (garbage.error or "")
    assert unknown.event_id == unknown_id
    assert "unknown event type" in (unknown.error or "")
    assert failing.event_id == failing_id
    assert "HandlerFailure" in (failing.error or "")

    # Every good event applied once; the failed one left no effect behind.
    async with env.sessions() as session:
        applied = (await session.scalars(select(crash_effect.c.event_id))).all()
    assert sorted(applied) == sorted(good_ids)

    # The dead-letter records keep the original headers next to the failure headers.
    dlq_records = await read_topic(
        env.settings.kafka_bootstrap, topic_name(env.settings, dead_letter_topic(GROUP))
    )
    failing_record = dlq_records[2]
    assert [h for h in failing_record.headers if h[0] not in DLQ_HEADERS] == headers

    # Fix the handler (restart without the fail marker), then replay the failed event.
    assert await rig.terminate(consumer) == 0
    consumer = rig.consumer()
    await rig.ready(consumer)
    assert await replay_dead_letters(env.settings, GROUP, event_ids={failing_id}) == 1

    async def failing_applied() -> bool:
        return (await env.effects())[1] >= len(good_ids) + 1

    await env.wait_for("the replayed event", failing_applied)
    assert await replay_dead_letters(env.settings, GROUP, event_ids={failing_id}) == 0
    await asyncio.sleep(1.0)
    async with env.sessions() as session:
        applied = (await session.scalars(select(crash_effect.c.event_id))).all()
    assert sorted(applied) == sorted([*good_ids, failing_id])

    letters = await list_dead_letters(env.settings, GROUP)
    assert [d.replayed for d in letters] == [False, False, True]

    # An unfiltered replay takes the rest (they are still poison, so they come back).
    assert await replay_dead_letters(env.settings, GROUP) == 2
    letters = await dead_letters(5)
    assert [d.replayed for d in letters] == [True, True, True, False, False]
    assert [d.reason for d in letters[3:]] == ["poison", "poison"]
    assert await rig.terminate(consumer) == 0
    assert await env.effects() == (len(good_ids) + 1, len(good_ids) + 1)
    report(
        capsys,
        "poison: 3 dead letters (2 poison, 1 retries-exhausted), partition kept flowing, "
        "handler-failed event replayed and applied once",
    )
