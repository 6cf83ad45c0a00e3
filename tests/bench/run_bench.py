"""Careloop benchmarks: event pipeline throughput and latency, and the patients API.

One run starts its own Kafka broker, PostgreSQL server and OpenBao dev server (the same
infrastructure modules the test suite uses) in a temporary directory, measures, prints a
table, writes ``.careloop/bench/results.json`` and stops everything it started.

    uv run python tests/bench/run_bench.py            # full run (sections 1-4: 2-3 minutes;
                                                      # 5 with 100,000 appointments: 35-50
                                                      # minutes on 2 cores; `make bench`
                                                      # runs 5 with 20,000, see
                                                      # docs/benchmarks.md)
    uv run python tests/bench/run_bench.py --quick    # smaller numbers, for a smoke check

Measurements:

1. ``pipeline``: N ``PatientRegistered`` events staged in a service outbox are relayed to
   Kafka (``OutboxRelay``) and applied by an idempotent ``EventConsumer`` (inbox row plus
   one effect row per event, in one transaction). Timed from relay start until all N are
   applied.
2. ``raw``: the same number of records of the same size produced with a plain
   ``AIOKafkaProducer`` (acks=all, idempotent) and consumed with a plain
   ``AIOKafkaConsumer`` that only counts them; no database.
3. ``latency``: events committed to the outbox one transaction each at a fixed rate
   (open loop), relay and consumer running; latency from the outbox commit to the commit
   of the consumer's transaction that applied the event.
4. ``api``: the patients service under uvicorn in its own process (real HTTP on a free
   port), driven by 32 concurrent httpx workers: register (POST) then read (GET).
5. ``reminders``: reminders for N appointments end to end. Identity, patients, messaging
   and scheduling each run under uvicorn in their own process (their lifespans run the
   workers as in production); the Twilio double runs in this process on a real port.
   Untimed seeding: P patients registered through the patients API (SMS only), then in
   scheduling's database one location, provider and type, N booked appointments spread
   over the P patients and one ``reminder`` timer each, due now (the columns
   ``Timers.schedule`` writes), before scheduling starts. Measured: from the first timer
   fired by scheduling's ``TimerWorker`` (batches of due timers, ``ReminderDue`` into the
   outbox, relayed to Kafka) through messaging's consumer (contact data read ahead per
   batch from patients with messaging's service token, one message row per touch) and
   its delivery worker (template rendered, sent through the Twilio client, several at a
   time) until the double has answered 201 to all N; stage rates come from the services'
   own timestamps. Then the same N records of a ``ReminderDue``'s size through plain
   aiokafka.
7. ``tasks``: N stalled-referral events (and a tenth of them again under new event ids)
   produced to ``careloop.referrals`` and consumed by the tasks service under uvicorn
   into one task each; timed from the first record produced until the worklist counts N
   tasks, reported as tasks/s, then checked to still be N. Baseline in the same run: the
   same records through plain aiokafka.
8. ``caregaps``: the care-gaps evaluator in this process, no infrastructure (run first,
   before any is started; ``--only caregaps`` starts none): N synthetic patients from a
   seeded RNG (``--caregaps-patients``, default 100,000; ages 0-95, both sexes, diabetes
   and hypertension rising with age, 3-25 facts each) evaluated over all 14 measures of
   the shipped library, against a 30 s target. Baseline in the same process: one plain
   pass over the same facts that only counts their codes. Memory: tracemalloc's peak
   while a freshly loaded library (empty code cache) evaluates the first 10,000
   patients, and the process's ru_maxrss.
9. ``caregaps-job``: the care-gaps population evaluation job end to end. N synthetic
   patients (``--caregaps-job-patients``, default 10,000; section 8's generator) sealed
   into care-gaps' store through its own codec, field port and repositories (untimed),
   then the service under uvicorn in its own process: POST /evaluations, then
   GET /evaluations/{id} until done (each patient's row locked, demographics and facts
   read and opened, evaluated, changed gaps written with outbox events and audit, progress
   committed per batch). Run twice: the second must change nothing. Baseline in the same
   run: the pure evaluator over the same patients. The 100,000 figure is a linear
   extrapolation, labelled so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import careloop_caregaps
import httpx
from aiokafka import AIOKafkaConsumer
from careloop_caregaps.domain.evaluator import evaluate as evaluate_caregaps
from careloop_caregaps.domain.facts import Coding, Fact, PatientProfile, Quantity
from careloop_caregaps.store.codec import demographics_text as caregaps_demographics_text
from careloop_caregaps.store.codec import fact_text as caregaps_fact_text
from careloop_caregaps.store.library_files import load_library as load_caregaps_library
from careloop_caregaps.store.repository import repositories as caregaps_repositories
from careloop_caregaps.store.tables import field_key as caregaps_field_key
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from sqlalchemy import Column, DateTime, MetaData, String, func, insert, select
from sqlalchemy import Table as SqlTable
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import careloop_gateway
import careloop_identity
import careloop_messaging
import careloop_patients
import careloop_referrals
import careloop_scheduling
import careloop_tasks
from careloop_contracts import Envelope, Event, PatientRegistered, ReminderDue, to_headers
from careloop_contracts.platform import CAREGAPS_FIELDS_KEY
from careloop_contracts.referrals import ReferralStalled
from careloop_kit.auth import totp
from careloop_kit.auth.testing import TestTokenIssuer
from careloop_kit.bus.consumer import EventConsumer
from careloop_kit.bus.kafka import ensure_topics, make_consumer, make_producer
from careloop_kit.bus.outbox import Outbox, OutboxRelay
from careloop_kit.clock import SystemClock
from careloop_kit.crypto import KeyRing
from careloop_kit.db import PlatformTables, add_platform_tables, make_engine, make_sessionmaker
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.fields import FieldCipher
from careloop_kit.infra.kafka import KafkaServer, ensure_kafka_jars
from careloop_kit.infra.openbao import OpenBaoServer, bootstrap_vault
from careloop_kit.infra.ports import free_port
from careloop_kit.infra.postgres import PostgresServer
from careloop_kit.settings import KitSettings
from careloop_kit.testing.apps import serve_in_task
from careloop_kit.testing.processes import serve_jwks
from careloop_kit.vault import Vault
from careloop_messaging.store.tables import message as message_table
from careloop_messaging.testing.twilio_double import TwilioDouble
from careloop_referrals.store.tables import location_view as referral_location_view
from careloop_scheduling.domain.appointment import AppointmentStatus
from careloop_scheduling.domain.catalog import (
    AppointmentType,
    PatientKind,
    Provider,
    VisitCategory,
)
from careloop_scheduling.domain.reminder_settings import TIMER_KIND as REMINDER_TIMER_KIND
from careloop_scheduling.store import tables as scheduling_tables
from careloop_scheduling.store.locations import LocationInfo
from careloop_scheduling.store.repository import repositories

ROOT = Path(__file__).resolve().parents[2]
PATIENTS_MIGRATIONS = Path(careloop_patients.__file__).parent / "migrations"
REFERRALS_MIGRATIONS = Path(careloop_referrals.__file__).parent / "migrations"
GATEWAY_MIGRATIONS = Path(careloop_gateway.__file__).parent / "migrations"
IDENTITY_MIGRATIONS = Path(careloop_identity.__file__).parent / "migrations"
SCHEDULING_MIGRATIONS = Path(careloop_scheduling.__file__).parent / "migrations"
MESSAGING_MIGRATIONS = Path(careloop_messaging.__file__).parent / "migrations"
TASKS_MIGRATIONS = Path(careloop_tasks.__file__).parent / "migrations"
CAREGAPS_MIGRATIONS = Path(careloop_caregaps.__file__).parent / "migrations"
DEFAULT_OUTPUT = ROOT / ".careloop" / "bench" / "results.json"
DEFAULT_SVG = ROOT / ".careloop" / "bench" / "throughput.svg"
ORG = "org-bench"

console = Console()
PROFILE_DIR: Path | None = None
PROFILED_UVICORN = """
import cProfile, signal, sys
import uvicorn.main

def _exit(signum, frame):
    raise SystemExit(0)

signal.signal(signal.SIGTERM, _exit)
path = sys.argv.pop(1)
profile = cProfile.Profile()
profile.enable()
try:
    uvicorn.main.main(sys.argv[1:], prog_name="uvicorn")
finally:
    profile.disable()
    profile.dump_stats(path)
"""


# --------------------------------------------------------------------------- helpers


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values, linear interpolation."""
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return sorted_values[0]
    rank = (len(sorted_values) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def summarize_ms(seconds: list[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean of durations given in seconds, in milliseconds."""
    values = sorted(s * 1000 for s in seconds)
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "p50_ms": round(percentile(values, 50), 2),
        "p95_ms": round(percentile(values, 95), 2),
        "p99_ms": round(percentile(values, 99), 2),
        "max_ms": round(values[-1], 2),
        "mean_ms": round(sum(values) / len(values), 2),
    }


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def registered(patient_id: str) -> PatientRegistered:
    return PatientRegistered(
        patient_id=patient_id,
        org_id=ORG,
        location_id="loc-north",
        registered_at=datetime.now(UTC),
    )


def machine_info() -> dict[str, Any]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    ram_gib: float | None = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    kafka_version = "unknown"
    with contextlib.suppress(OSError):
        found = re.search(
            r"<kafka\.version>([^<]+)</kafka\.version>",
            (ROOT / "deploy" / "kafka" / "pom.xml").read_text(),
        )
        if found:
            kafka_version = found.group(1)
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        proc = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if proc.returncode == 0:
            commit = proc.stdout.strip()
    versions: dict[str, str] = {}
    from importlib.metadata import PackageNotFoundError, version

    for package in ("aiokafka", "asyncpg", "sqlalchemy", "fastapi", "uvicorn", "httpx"):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "kafka": kafka_version,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": commit,
        "packages": versions,
    }


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """Kafka, PostgreSQL and OpenBao started in parallel threads in one temp directory."""

    base: Path
    kafka: KafkaServer | None = None
    postgres: PostgresServer | None = None
    openbao: OpenBaoServer | None = None
    startup_s: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        def timed(name: str, starter: Callable[[], Any]) -> Any:
            began = time.monotonic()
            server = starter()
            self.startup_s[name] = round(time.monotonic() - began, 1)
            return server

        def start_kafka() -> KafkaServer:
            libs = ensure_kafka_jars()
            server = KafkaServer(self.base / "kafka", free_port(), free_port(), libs)
            server.start(timeout=120)
            return server

        def start_postgres() -> PostgresServer:
            server = PostgresServer(self.base / "pg")
            server.start()
            return server

        def start_openbao() -> OpenBaoServer:
            server = OpenBaoServer.dev(data_dir=self.base / "openbao")
            server.start()
            return server

        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="bench-start") as pool:
            futures: dict[str, Future[Any]] = {
                "kafka": pool.submit(timed, "kafka", start_kafka),
                "postgres": pool.submit(timed, "postgres", start_postgres),
                "openbao": pool.submit(timed, "openbao", start_openbao),
            }
            errors = []
            for name, future in futures.items():
                try:
                    setattr(self, name, future.result())
                except Exception as exc:
                    errors.append(f"{name}: {exc}")
            if errors:
                raise RuntimeError("infrastructure failed to start:\n" + "\n".join(errors))

    def stop(self) -> None:
        for name in ("kafka", "postgres", "openbao"):
            server = getattr(self, name)
            if server is None:
                continue
            try:
                server.stop()
            except Exception as exc:
                console.print(f"[yellow]stopping {name} failed: {exc!r}")
            setattr(self, name, None)

    @property
    def bootstrap(self) -> str:
        assert self.kafka is not None
        return self.kafka.bootstrap_servers

    async def database(self, name: str) -> str:
        """Create database ``name`` owned by a login role of the same name; its DSN."""
        assert self.postgres is not None
        password = uuid.uuid4().hex
        await self.postgres.create_database(name, owner=name, password=password)
        return self.postgres.dsn_for(name, name, password)


# --------------------------------------------------------------------------- event pipeline


@dataclass
class PipelineDbs:
    """A producing service's database (outbox) and a consuming one (inbox + effect)."""

    out_engine: AsyncEngine
    out_sm: async_sessionmaker[AsyncSession]
    out_tables: PlatformTables
    in_engine: AsyncEngine
    in_sm: async_sessionmaker[AsyncSession]
    in_tables: PlatformTables
    effect: SqlTable

    async def dispose(self) -> None:
        await self.out_engine.dispose()
        await self.in_engine.dispose()


async def pipeline_databases(stack: Stack) -> PipelineDbs:
    out_meta = MetaData()
    out_tables = add_platform_tables(out_meta)
    in_meta = MetaData()
    in_tables = add_platform_tables(in_meta)
    effect = SqlTable(
        "bench_effect",
        in_meta,
        Column("event_id", String(64), primary_key=True),
        Column("patient_id", String(64), nullable=False),
        Column("applied_at", DateTime(timezone=True), nullable=False),
    )
    out_engine = make_engine(await stack.database("bench_producer"))
    in_engine = make_engine(await stack.database("bench_consumer"))
    async with out_engine.begin() as conn:
        await conn.run_sync(out_meta.create_all)
    async with in_engine.begin() as conn:
        await conn.run_sync(in_meta.create_all)
    return PipelineDbs(
        out_engine=out_engine,
        out_sm=make_sessionmaker(out_engine),
        out_tables=out_tables,
        in_engine=in_engine,
        in_sm=make_sessionmaker(in_engine),
        in_tables=in_tables,
        effect=effect,
    )


def kit_settings(stack: Stack, prefix: str) -> KitSettings:
    assert stack.openbao is not None
    return KitSettings(
        environment="test",
        kafka_bootstrap=stack.bootstrap,
        vault_addr=stack.openbao.addr,
        topic_prefix=prefix,
    )


@contextlib.asynccontextmanager
async def running_consumer(
    settings: KitSettings,
    dbs: PipelineDbs,
    topic: str,
    on_apply: Callable[[AsyncSession, Envelope, Event], None] | None = None,
) -> Any:
    """An ``EventConsumer`` whose handler inserts one effect row per event, assigned."""
    effect = dbs.effect

    async def handler(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        assert isinstance(event, PatientRegistered)
        await session.execute(
            effect.insert().values(
                event_id=envelope.id, patient_id=event.patient_id, applied_at=func.now()
            )
        )
        if on_apply is not None:
            on_apply(session, envelope, event)

    group = f"{settings.topic_prefix}careloop.bench.effects"
    kafka_consumer = make_consumer(settings, topic, group_id=group, client_id="bench-consumer")
    dlq_producer = make_producer(settings, client_id="bench-consumer-dlq")
    await dlq_producer.start()
    await kafka_consumer.start()
    consumer = EventConsumer(
        kafka_consumer,
        dlq_producer,
        dbs.in_sm,
        dbs.in_tables,
        group_id=group,
        handlers={PatientRegistered.event_type: handler},
    )
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        deadline = time.monotonic() + 60
        while not kafka_consumer.assignment():
            if task.done():
                task.result()
            if time.monotonic() > deadline:
                raise RuntimeError("the consumer got no partitions within 60 s")
            await asyncio.sleep(0.05)
        yield consumer
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=10)
        await kafka_consumer.stop()
        await dlq_producer.stop()


async def stage_outbox(
    dbs: PipelineDbs, outbox: Outbox, n: int, progress: Progress, task: TaskID
) -> None:
    """Add ``n`` events to the outbox, 1,000 per transaction (untimed set-up)."""
    done = 0
    while done < n:
        size = min(1000, n - done)
        async with dbs.out_sm() as session, session.begin():
            for _ in range(size):
                patient_id = new_id("pat")
                await outbox.add(session, registered(patient_id), key=patient_id, org_id=ORG)
        done += size
        progress.update(task, completed=done)


async def bench_pipeline(
    stack: Stack, dbs: PipelineDbs, n: int, progress: Progress
) -> dict[str, Any]:
    settings = kit_settings(stack, "bench-tput.")
    outbox = Outbox(dbs.out_tables, service="patients", topic_prefix=settings.topic_prefix)
    await ensure_topics(settings, [outbox.own_topic])
    staging = progress.add_task("1/4 staging outbox rows (untimed)", total=n)
    began = time.perf_counter()
    await stage_outbox(dbs, outbox, n, progress, staging)
    staging_s = time.perf_counter() - began
    progress.remove_task(staging)

    running = progress.add_task("1/4 outbox → Kafka → idempotent consumer", total=n)
    producer = make_producer(settings, client_id="bench-relay")
    await producer.start()
    try:
        async with running_consumer(settings, dbs, outbox.own_topic) as consumer:
            relay = OutboxRelay(
                dbs.out_sm,
                dbs.out_tables,
                producer,
                service="patients",
                batch_size=settings.outbox_batch_size,
                poll_interval_s=settings.outbox_poll_interval_s,
            )
            stop = asyncio.Event()
            t0 = time.perf_counter()
            relay_task = asyncio.create_task(relay.run(stop))
            published_at: float | None = None
            deadline = t0 + 600
            while consumer.stats.applied < n:
                if published_at is None and relay.published >= n:
                    published_at = time.perf_counter()
                if relay_task.done():
                    relay_task.result()
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"only {consumer.stats.applied}/{n} applied in 600 s")
                progress.update(running, completed=consumer.stats.applied)
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - t0
            if published_at is None:
                published_at = time.perf_counter()
            progress.update(running, completed=n)
            stop.set()
            await asyncio.wait_for(relay_task, timeout=10)
            stats = consumer.stats
    finally:
        await producer.stop()
    progress.remove_task(running)

    async with dbs.in_sm() as session:
        effects = await session.scalar(select(func.count()).select_from(dbs.effect))
        inbox = await session.scalar(select(func.count()).select_from(dbs.in_tables.inbox))
    if effects != n or inbox != n:
        raise RuntimeError(f"expected {n} effect and inbox rows, found {effects} and {inbox}")
    return {
        "events": n,
        "staging_seconds": round(staging_s, 2),
        "seconds": round(elapsed, 3),
        "events_per_s": round(n / elapsed, 1),
        "relay_publish_seconds": round(published_at - t0, 3),
        "relay_publish_events_per_s": round(n / (published_at - t0), 1),
        "duplicates": stats.duplicates,
        "dead_lettered": stats.dead_lettered,
        "retries": stats.retries,
        "effect_rows": effects,
        "relay_batch_size": settings.outbox_batch_size,
        "partitions": 6,
    }


async def bench_raw(stack: Stack, dbs: PipelineDbs, n: int, progress: Progress) -> dict[str, Any]:
    """Plain aiokafka produce + consume of ``n`` records shaped like the outbox rows."""
    settings = kit_settings(stack, "bench-raw.")
    topic = f"{settings.topic_prefix}careloop.patients"
    await ensure_topics(settings, [topic])
    table = dbs.out_tables.outbox
    async with dbs.out_sm() as session:
        sample = (await session.execute(select(table.c.headers, table.c.payload).limit(1))).one()
    headers = [(k, v.encode()) for k, v in sample.headers]
    return await raw_produce_consume(
        settings, topic, sample.payload, headers, n, progress, "2/4 raw aiokafka produce + consume"
    )


async def raw_produce_consume(
    settings: KitSettings,
    topic: str,
    value: bytes,
    headers: list[tuple[str, bytes]],
    n: int,
    progress: Progress,
    label: str,
) -> dict[str, Any]:
    """Produce ``n`` copies of one record (fresh keys) and count them with a plain consumer."""
    record_bytes = len(value) + sum(len(k) + len(v) for k, v in headers) + 20
    keys = [new_id("pat").encode() for _ in range(n)]

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"{settings.topic_prefix}raw-counter",
        client_id="bench-raw-consumer",
        auto_offset_reset="earliest",
        max_poll_records=500,
    )
    producer = make_producer(settings, client_id="bench-raw-producer")
    await consumer.start()
    await producer.start()
    task = progress.add_task(label, total=n)
    try:
        deadline = time.monotonic() + 60
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise RuntimeError("raw consumer got no partitions within 60 s")
            await consumer.getmany(timeout_ms=100)
        received = 0

        async def consume() -> float:
            nonlocal received
            while received < n:
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                for records in batches.values():
                    received += len(records)
                progress.update(task, completed=received)
            return time.perf_counter()

        t0 = time.perf_counter()
        consuming = asyncio.create_task(consume())
        futures = [
            await producer.send(topic, value=value, key=key, headers=headers) for key in keys
        ]
        await asyncio.gather(*futures)
        produced_at = time.perf_counter()
        consumed_at = await asyncio.wait_for(consuming, timeout=600)
    finally:
        await producer.stop()
        await consumer.stop()
        progress.remove_task(task)
    elapsed = consumed_at - t0
    return {
        "events": n,
        "record_bytes_approx": record_bytes,
        "seconds": round(elapsed, 3),
        "events_per_s": round(n / elapsed, 1),
        "produce_seconds": round(produced_at - t0, 3),
        "produce_events_per_s": round(n / (produced_at - t0), 1),
        "received": received,
    }


async def bench_latency(
    stack: Stack, dbs: PipelineDbs, rate: float, duration: float, progress: Progress
) -> dict[str, Any]:
    """Open-loop fixed-rate outbox commits; commit → consumer commit latency."""
    settings = kit_settings(stack, "bench-lat.")
    outbox = Outbox(dbs.out_tables, service="patients", topic_prefix=settings.topic_prefix)
    await ensure_topics(settings, [outbox.own_topic])
    total = int(rate * duration)
    committed: dict[str, float] = {}
    applied: dict[str, float] = {}

    def on_apply(session: AsyncSession, envelope: Envelope, _event: Event) -> None:
        def after_commit(_session: Any) -> None:
            applied[envelope.id] = time.perf_counter()

        sa_event.listen(session.sync_session, "after_commit", after_commit, once=True)

    async def insert_one() -> None:
        patient_id = new_id("pat")
        async with dbs.out_sm() as session:
            async with session.begin():
                envelope = await outbox.add(
                    session, registered(patient_id), key=patient_id, org_id=ORG
                )
            committed[envelope.id] = time.perf_counter()

    task = progress.add_task(f"3/4 latency at {rate:g}/s for {duration:g}s", total=total)
    producer = make_producer(settings, client_id="bench-lat-relay")
    await producer.start()
    try:
        async with running_consumer(settings, dbs, outbox.own_topic, on_apply):
            relay = OutboxRelay(
                dbs.out_sm,
                dbs.out_tables,
                producer,
                service="patients",
                batch_size=settings.outbox_batch_size,
                poll_interval_s=settings.outbox_poll_interval_s,
            )
            stop = asyncio.Event()
            relay_task = asyncio.create_task(relay.run(stop))
            inserts: list[asyncio.Task[None]] = []
            t0 = time.perf_counter()
            late = 0
            for i in range(total):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.005:
                    late += 1
                inserts.append(asyncio.create_task(insert_one()))
                if i % 50 == 0:
                    progress.update(task, completed=len(applied))
            await asyncio.gather(*inserts)
            offered_s = time.perf_counter() - t0
            deadline = time.perf_counter() + 60
            while len(applied) < total and time.perf_counter() < deadline:
                progress.update(task, completed=len(applied))
                await asyncio.sleep(0.02)
            progress.update(task, completed=len(applied))
            stop.set()
            await asyncio.wait_for(relay_task, timeout=10)
    finally:
        await producer.stop()
        progress.remove_task(task)
    latencies = [applied[k] - committed[k] for k in committed if k in applied]
    return {
        "rate_per_s": rate,
        "duration_s": duration,
        "events": total,
        "achieved_rate_per_s": round(total / offered_s, 1),
        "late_starts": late,
        "applied": len(latencies),
        "missing": total - len(latencies),
        "relay_poll_interval_s": settings.outbox_poll_interval_s,
        **summarize_ms(latencies),
    }


# --------------------------------------------------------------------------- patients API


def patient_body(marker: str) -> dict[str, Any]:
    return {
        "location_id": "loc-north",
        "name": {"family": f"Fam{marker}", "given": [f"Giv{marker}"]},
        "birth_date": "1980-04-02",
        "sex": "female",
        "phones": ["(555) 201-3344"],
        "emails": [f"{marker}@example.org"],
        "preferred_language": "es",
    }


@contextlib.contextmanager
def patients_server(
    stack: Stack, dsn: str, token: str, log_file: Path, jwks_url: str
) -> Iterator[str]:
    """The patients service under uvicorn in a child process; yields its base URL."""
    with service_server(
        "careloop_patients", stack, dsn, token, log_file, {"CARELOOP_AUTH_JWKS_URL": jwks_url}
    ) as url:
        yield url


@contextlib.contextmanager
def service_server(
    package: str,
    stack: Stack,
    dsn: str,
    token: str,
    log_file: Path,
    extra_env: dict[str, str],
) -> Iterator[str]:
    """A Careloop service under uvicorn in a child process; yields its base URL."""
    assert stack.openbao is not None
    port = free_port()
    env = {
        **os.environ,
        "CARELOOP_ENVIRONMENT": "test",
        "CARELOOP_DATABASE_URL": dsn,
        "CARELOOP_KAFKA_BOOTSTRAP": stack.bootstrap,
        "CARELOOP_VAULT_ADDR": stack.openbao.addr,
        "CARELOOP_VAULT_TOKEN": token,
        "CARELOOP_TOPIC_PREFIX": "bench-api.",
        "CARELOOP_LOG_LEVEL": "WARNING",
        **extra_env,
    }
    # `--profile`: cProfile around uvicorn, to see where a service's CPU time goes.
    # uvicorn re-raises the SIGTERM it stopped on; the handler set here turns that
    # into SystemExit, so the profile is written.
    launcher = (
        [
            "-c",
            PROFILED_UVICORN,
            str(PROFILE_DIR / f"{package}.prof"),
        ]
        if PROFILE_DIR
        else ["-m", "uvicorn"]
    )
    command = [
        sys.executable,
        *launcher,
        f"{package}.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


async def wait_ready(client: httpx.AsyncClient, within_s: float = 90) -> None:
    deadline = time.monotonic() + within_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = await client.get("/readyz")
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.TransportError as exc:
            last = repr(exc)
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the patients service did not become ready: {last}")


async def load_phase(
    client: httpx.AsyncClient,
    seconds: float,
    workers: int,
    request: Callable[[httpx.AsyncClient, int], Any],
    expected_status: int,
    progress: Progress,
    task: TaskID,
) -> tuple[dict[str, Any], list[httpx.Response]]:
    """``workers`` closed-loop workers sending ``request`` for ``seconds``."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    keep: list[httpx.Response] = []
    t0 = time.perf_counter()
    end = t0 + seconds

    async def worker(number: int) -> None:
        count = 0
        while time.perf_counter() < end:
            began = time.perf_counter()
            try:
                response = await request(client, number * 1_000_000 + count)
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            finished = time.perf_counter()
            count += 1
            if response.status_code == expected_status:
                latencies.append(finished - began)
                keep.append(response)
            else:
                key = str(response.status_code)
                errors[key] = errors.get(key, 0) + 1

    async def ticker() -> None:
        while time.perf_counter() < end:
            progress.update(task, completed=min(seconds, time.perf_counter() - t0))
            await asyncio.sleep(0.25)

    tick = asyncio.create_task(ticker())
    await asyncio.gather(*(worker(i) for i in range(workers)))
    elapsed = time.perf_counter() - t0
    tick.cancel()
    progress.update(task, completed=seconds)
    return {
        "seconds": round(elapsed, 2),
        "requests_ok": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "errors": errors,
        **summarize_ms(latencies),
    }, keep


async def bench_api(
    stack: Stack, seconds: float, workers: int, progress: Progress, log_file: Path
) -> dict[str, Any]:
    assert stack.openbao is not None
    dsn = await stack.database("bench_patients")
    await upgrade_async(PATIENTS_MIGRATIONS, dsn)
    tokens = await asyncio.to_thread(
        bootstrap_vault, stack.openbao.addr, stack.openbao.root_token, ["patients", "audit"]
    )
    # A front-desk user's access token, signed like identity signs them; the service
    # verifies it on every request against the JWKS served below.
    issuer = TestTokenIssuer(SystemClock())
    access = issuer.mint(
        org=ORG, sub="user-bench", roles=["front_desk"], loc=["*"], exp=int(time.time()) + 3000
    )
    headers = {"Authorization": f"Bearer {access}"}
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    setup = progress.add_task("4/4 starting the patients service", total=None)
    async with serve_jwks(issuer) as jwks_url:
        return await _api_phases(
            stack,
            dsn,
            tokens,
            jwks_url,
            headers,
            limits,
            seconds,
            workers,
            progress,
            setup,
            log_file,
        )


async def _api_phases(
    stack: Stack,
    dsn: str,
    tokens: dict[str, str],
    jwks_url: str,
    headers: dict[str, str],
    limits: httpx.Limits,
    seconds: float,
    workers: int,
    progress: Progress,
    setup: TaskID,
    log_file: Path,
) -> dict[str, Any]:
    with patients_server(stack, dsn, tokens["patients"], log_file, jwks_url) as url:
        async with httpx.AsyncClient(
            base_url=url, headers=headers, limits=limits, timeout=30
        ) as client:
            await wait_ready(client)
            # Warm-up: connections, the first data keys from Vault, SQL statement caches.
            warm = [client.post("/patients", json=patient_body(f"w{i}")) for i in range(workers)]
            for response in await asyncio.gather(*warm):
                if response.status_code != 201:
                    raise RuntimeError(f"warm-up POST failed: {response.status_code}")
            progress.remove_task(setup)

            task = progress.add_task(f"4/4 POST /patients, {workers} workers", total=seconds)

            def post(c: httpx.AsyncClient, n: int) -> Any:
                return c.post("/patients", json=patient_body(f"b{n}"))

            write, created = await load_phase(client, seconds, workers, post, 201, progress, task)
            progress.remove_task(task)
            ids = [r.json()["id"] for r in created]
            if not ids:
                raise RuntimeError("no patient was registered; see " + str(log_file))

            task = progress.add_task(f"4/4 GET /patients/{{id}}, {workers} workers", total=seconds)

            def get(c: httpx.AsyncClient, _n: int) -> Any:
                return c.get(f"/patients/{random.choice(ids)}")

            read, _ = await load_phase(client, seconds, workers, get, 200, progress, task)
            progress.remove_task(task)

            # The same reads through the gateway (token checked there and again in the
            # service), in the same run, for the gateway's overhead.
            assert stack.openbao is not None
            gateway_dsn = await stack.database("bench_gateway")
            await upgrade_async(GATEWAY_MIGRATIONS, gateway_dsn)
            gateway_token = (
                await asyncio.to_thread(
                    bootstrap_vault, stack.openbao.addr, stack.openbao.root_token, ["gateway"]
                )
            )["gateway"]
            gateway_env = {
                "CARELOOP_AUTH_JWKS_URL": jwks_url,
                "CARELOOP_ROUTES": json.dumps({"patients": url}),
                # The benchmark measures overhead, not the per-principal limit.
                "CARELOOP_RATE_LIMIT_PER_MINUTE": "10000000",
                "CARELOOP_RATE_LIMIT_BURST": "1000000",
            }
            with service_server(
                "careloop_gateway", stack, gateway_dsn, gateway_token, log_file, gateway_env
            ) as gateway_url:
                async with httpx.AsyncClient(
                    base_url=gateway_url, headers=headers, limits=limits, timeout=30
                ) as via:
                    await wait_ready(via)
                    task = progress.add_task(
                        f"4/4 GET via the gateway, {workers} workers", total=seconds
                    )

                    def get_via(c: httpx.AsyncClient, _n: int) -> Any:
                        return c.get(f"/api/v1/patients/patients/{random.choice(ids)}")

                    through, _ = await load_phase(
                        via, seconds, workers, get_via, 200, progress, task
                    )
                    progress.remove_task(task)
    return {
        "workers": workers,
        "post": write,
        "get": read,
        "get_via_gateway": through,
        "server_log": str(log_file),
    }


# --------------------------------------------------------------------------- reminders


PRACTICE_NAME = "Bayview Family Practice"
REMINDER_LOCATION = "loc-north"


# A referral's whole loop after `received`: five steps, each one transition.
REFERRAL_LOOP = ("triaged", "patient-contacted", "scheduled", "seen", "outcome-reported")


async def bench_referrals(
    stack: Stack, n: int, workers: int, progress: Progress, log_file: Path
) -> dict[str, Any]:
    """`n` referrals created and moved through their whole loop over HTTP (token check,
    state machine, optimistic save, sealed reason, outbox, audit); the baseline, in the
    same run, is reading one referral (token check, read, audit) with as many workers."""
    assert stack.openbao is not None
    dsn = await stack.database("bench_referrals")
    await upgrade_async(REFERRALS_MIGRATIONS, dsn)
    # The location as identity's location events leave it in referrals' view, so each
    # patient contact names its practice, as in a running platform.
    engine = make_engine(dsn)
    async with engine.begin() as conn:
        await conn.execute(
            insert(referral_location_view).values(
                org_id=ORG,
                id="loc-bench",
                name="Bench Clinic (synthetic)",
                time_zone="America/Chicago",
                sensitive=False,
                changed_at=None,
                updated_at=datetime.now(UTC),
            )
        )
    await engine.dispose()
    tokens = await asyncio.to_thread(
        bootstrap_vault, stack.openbao.addr, stack.openbao.root_token, ["referrals"]
    )
    issuer = TestTokenIssuer(SystemClock())
    access = issuer.mint(
        org=ORG,
        sub="user-bench",
        roles=["care_coordinator"],
        loc=["*"],
        amr=["pwd", "otp"],
        exp=int(time.time()) + 3000,
    )
    headers = {"Authorization": f"Bearer {access}"}
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    setup = progress.add_task("6/6 starting the referrals service", total=None)
    async with serve_jwks(issuer) as jwks_url:
        with service_server(
            "careloop_referrals",
            stack,
            dsn,
            tokens["referrals"],
            log_file,
            {"CARELOOP_AUTH_JWKS_URL": jwks_url},
        ) as url:
            async with httpx.AsyncClient(
                base_url=url, headers=headers, limits=limits, timeout=60
            ) as client:
                await wait_ready(client)
                progress.remove_task(setup)
                referrer = await client.post(
                    "/referrals/directory",
                    json={
                        "kind": "provider",
                        "npi": "1234567893",
                        "name": "Dr. Bench (synthetic)",
                        "contact": {"email": "bench@clinic.example"},
                    },
                )
                referrer.raise_for_status()
                return await _referral_phases(client, referrer.json()["id"], n, workers, progress)


async def _referral_phases(
    client: httpx.AsyncClient, referrer: str, n: int, workers: int, progress: Progress
) -> dict[str, Any]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(n):
        queue.put_nowait(number)
    created: list[str] = []
    step_latencies: list[float] = []
    errors: dict[str, int] = {}
    task = progress.add_task(f"6/6 {n:,} referrals through their loop", total=n)

    def failed(what: str) -> None:
        errors[what] = errors.get(what, 0) + 1

    async def one_loop(number: int) -> None:
        try:
            response = await client.post(
                "/referrals",
                json={
                    "location_id": "loc-bench",
                    "patient_id": f"pat-bench-{number % 1000}",
                    "direction": "inbound",
                    "referring_provider_id": referrer,
                    "reason": "Synthetic benchmark referral",
                },
            )
        except httpx.HTTPError as exc:
            return failed(type(exc).__name__)
        if response.status_code != 201:
            return failed(str(response.status_code))
        referral_id = response.json()["id"]
        created.append(referral_id)
        for stage in REFERRAL_LOOP:
            body: dict[str, Any] = {"to": stage}
            if stage == "scheduled":
                body["appointment_id"] = f"apt-{referral_id}"
            began = time.perf_counter()
            try:
                moved = await client.post(f"/referrals/{referral_id}/transitions", json=body)
            except httpx.HTTPError as exc:
                return failed(type(exc).__name__)
            if moved.status_code != 200:
                return failed(str(moved.status_code))
            step_latencies.append(time.perf_counter() - began)

    async def worker() -> None:
        while not queue.empty():
            await one_loop(queue.get_nowait())
            progress.advance(task)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    loop_seconds = time.perf_counter() - t0
    progress.remove_task(task)
    transitions = len(step_latencies)

    # Baseline: reads of the same referrals, closed-loop, for a fixed time.
    read_task = progress.add_task("6/6 baseline: GET /referrals/{id}", total=10.0)
    reads, _ = await load_phase(
        client,
        10.0,
        workers,
        lambda c, i: c.get(f"/referrals/{created[i % len(created)]}"),
        200,
        progress,
        read_task,
    )
    progress.remove_task(read_task)
    per_s = transitions / loop_seconds if loop_seconds else 0.0
    return {
        "referrals": n,
        "workers": workers,
        "seconds": round(loop_seconds, 2),
        "transitions": transitions,
        "transitions_per_s": round(per_s, 1),
        "referrals_per_s": round(len(created) / loop_seconds, 1) if loop_seconds else 0.0,
        "errors": errors,
        "step": summarize_ms(step_latencies),
        "baseline_reads": reads,
        "ratio_to_reads": round(per_s / reads["requests_per_s"], 3)
        if reads["requests_per_s"]
        else None,
    }


def stalled_referral(number: int, at: datetime) -> ReferralStalled:
    """A synthetic stalled referral (ids only), one referral per number."""
    return ReferralStalled(
        referral_id=f"ref-bench-{number}",
        patient_id=f"pat-bench-{number % 1000}",
        org_id=ORG,
        location_id="loc-bench",
        direction="inbound",
        urgency="routine",
        stage="patient-contacted",
        task_status="in-progress",
        version=3,
        occurred_at=at,
        stage_entered_at=at - timedelta(days=3),
        escalate_at=at + timedelta(days=1),
    )


async def bench_tasks(stack: Stack, n: int, progress: Progress, log_file: Path) -> dict[str, Any]:
    """`n` stalled-referral events (plus a tenth sent again under new event ids) on Kafka,
    consumed by the tasks service into one task each (inbox, rules, dedup key, outbox,
    overdue timer); the baseline, in the same run, is the same records through plain
    aiokafka."""
    assert stack.openbao is not None
    dsn = await stack.database("bench_tasks")
    await upgrade_async(TASKS_MIGRATIONS, dsn)
    tokens = await asyncio.to_thread(
        bootstrap_vault, stack.openbao.addr, stack.openbao.root_token, ["tasks"]
    )
    issuer = TestTokenIssuer(SystemClock())
    access = issuer.mint(
        org=ORG,
        sub="user-bench",
        roles=["org_admin"],
        loc=["*"],
        amr=["pwd", "otp"],
        exp=int(time.time()) + 3000,
    )
    settings = kit_settings(stack, "bench-api.")
    topic = f"{settings.topic_prefix}careloop.referrals"
    await ensure_topics(settings, [topic, f"{settings.topic_prefix}careloop.tasks"])
    now = datetime.now(UTC)
    events = [stalled_referral(i, now) for i in range(n)] + [
        stalled_referral(i, now) for i in range(0, n, 10)
    ]
    setup = progress.add_task("7/7 starting the tasks service", total=None)
    async with serve_jwks(issuer) as jwks_url:
        with service_server(
            "careloop_tasks",
            stack,
            dsn,
            tokens["tasks"],
            log_file,
            {"CARELOOP_AUTH_JWKS_URL": jwks_url},
        ) as url:
            async with httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {access}"}, timeout=60
            ) as client:
                await wait_ready(client)
                progress.remove_task(setup)
                running = progress.add_task(f"7/7 {n:,} stalled referrals → tasks", total=n)
                producer = make_producer(settings, client_id="bench-tasks-producer")
                await producer.start()
                try:
                    t0 = time.perf_counter()
                    futures = []
                    for event in events:
                        envelope = Envelope(
                            id=str(uuid.uuid4()),
                            type=event.event_type,
                            source="/careloop/referrals",
                            time=now,
                            subject=event.referral_id,
                            org_id=ORG,
                            location_id=event.location_id,
                        )
                        futures.append(
                            await producer.send(
                                topic,
                                value=event.to_json(),
                                key=event.partition_key().encode(),
                                headers=to_headers(envelope),
                            )
                        )
                    await asyncio.gather(*futures)
                finally:
                    await producer.stop()
                made = 0
                deadline = time.monotonic() + 600
                while made < n:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"tasks: only {made} of {n} within 600 s")
                    await asyncio.sleep(0.25)
                    counts = (await client.get("/tasks/counts")).raise_for_status().json()
                    made = sum(counts["by_status"].values())
                    progress.update(running, completed=made)
                elapsed = time.perf_counter() - t0
                progress.remove_task(running)
                # The replayed tenth has been consumed by now (same partitions, sent
                # before the last originals): still one task per referral.
                await asyncio.sleep(2)
                counts = (await client.get("/tasks/counts")).raise_for_status().json()
                total = sum(counts["by_status"].values())
    if total != n:
        raise RuntimeError(f"tasks: {total} tasks for {n} stalled referrals")
    raw_settings = kit_settings(stack, f"bench-tasks-raw-{uuid.uuid4().hex[:6]}.")
    raw_topic = f"{raw_settings.topic_prefix}careloop.referrals"
    await ensure_topics(raw_settings, [raw_topic])
    sample = events[0]
    sample_envelope = Envelope(
        id=str(uuid.uuid4()),
        type=sample.event_type,
        source="/careloop/referrals",
        time=now,
        subject=sample.referral_id,
        org_id=ORG,
        location_id=sample.location_id,
    )
    raw = await raw_produce_consume(
        raw_settings,
        raw_topic,
        sample.to_json(),
        to_headers(sample_envelope),
        len(events),
        progress,
        "7/7 baseline: the same records through plain aiokafka",
    )
    per_s = n / elapsed if elapsed else 0.0
    return {
        "stalled_referrals": n,
        "replayed": len(events) - n,
        "tasks": total,
        "seconds": round(elapsed, 2),
        "tasks_per_s": round(per_s, 1),
        "baseline_raw": raw,
        "ratio_to_raw": round(per_s / raw["events_per_s"], 4) if raw["events_per_s"] else None,
    }


class ArrivalRecorder:
    """ASGI wrapper around the Twilio double: the wall-clock time of every 201 it sends."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.times: list[float] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def recording_send(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] == 201:
                self.times.append(time.time())
            await send(message)

        await self.app(scope, receive, recording_send)


async def org_admin_headers(identity_url: str, bootstrap_token: str) -> tuple[str, dict[str, str]]:
    """A new organization and its first admin signed in with a second factor (patients
    asks org admins for one): (org id, bearer headers)."""
    email = f"admin-{uuid.uuid4().hex[:8]}@example.org"
    password = "correct-Horse-42-battery"
    bootstrap = {"X-Bootstrap-Token": bootstrap_token}
    async with httpx.AsyncClient(base_url=identity_url, timeout=30) as client:
        org = await client.post(
            "/organizations",
            json={
                "name": "Bench practice (synthetic)",
                "admin": {"email": email, "display_name": "Admin", "password": password},
            },
            headers=bootstrap,
        )
        if org.status_code != 201:
            raise RuntimeError(f"creating the organization failed: {org.status_code} {org.text}")
        credentials = {"org_id": org.json()["id"], "email": email, "password": password}
        first = await client.post("/auth/login", json=credentials)
        first.raise_for_status()
        bearer = {"Authorization": f"Bearer {first.json()['access_token']}"}
        enrolled = await client.post("/auth/mfa/enroll", headers=bearer)
        enrolled.raise_for_status()
        secret = totp.from_base32(enrolled.json()["secret"])
        now = datetime.now(UTC)
        verified = await client.post(
            "/auth/mfa/verify", json={"code": totp.totp(secret, now)}, headers=bearer
        )
        verified.raise_for_status()
        next_code = totp.totp(secret, now + timedelta(seconds=totp.STEP_S))
        signed_in = await client.post("/auth/login", json={**credentials, "otp": next_code})
        signed_in.raise_for_status()
    return str(org.json()["id"]), {"Authorization": f"Bearer {signed_in.json()['access_token']}"}


async def register_sms_patients(
    patients_url: str, headers: dict[str, str], count: int, progress: Progress
) -> list[str]:
    """Register ``count`` synthetic patients reachable by SMS only; their ids."""
    task = progress.add_task("5/5 registering patients (untimed)", total=count)
    ids: list[str] = []
    queue = iter(range(count))
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(
        base_url=patients_url, headers=headers, limits=limits, timeout=60
    ) as client:
        await wait_ready(client)

        async def worker() -> None:
            for i in queue:
                body = {
                    **patient_body(f"r{i}"),
                    "phones": [f"+1 555 {i // 10_000:03d} {i % 10_000:04d}"],
                    "preferences": {"allowed_channels": ["sms"], "preferred_channel": "sms"},
                }
                response = await client.post("/patients", json=body)
                if response.status_code != 201:
                    raise RuntimeError(
                        f"registering a patient failed: {response.status_code} {response.text}"
                    )
                ids.append(str(response.json()["id"]))
                progress.update(task, completed=len(ids))

        await asyncio.gather(*(worker() for _ in range(16)))
    progress.remove_task(task)
    return ids


async def seed_reminder_timers(
    dsn: str, org_id: str, patient_ids: list[str], n: int, progress: Progress
) -> dict[str, Any]:
    """Seed scheduling's database: one location, provider and type, ``n`` booked
    appointments (round-robin over the patients, 10 minutes apart from tomorrow on, so the
    no-double-booking constraint holds) and one `reminder` timer per appointment, due now,
    with the columns the kit's `Timers.schedule` writes. Scheduling is not running yet."""
    engine = make_engine(dsn)
    sessionmaker = make_sessionmaker(engine)
    now = datetime.now(UTC)
    first_start = (now + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    provider_id = new_id("prov")
    type_id = new_id("type")
    task = progress.add_task("5/5 seeding appointments + timers (untimed)", total=n)
    began = time.perf_counter()
    try:
        async with sessionmaker() as session, session.begin():
            repos = repositories(session)
            await repos.locations.put(
                org_id,
                LocationInfo(REMINDER_LOCATION, "America/New_York", PRACTICE_NAME, False),
                now,
            )
            await repos.catalog.add_provider(
                Provider(provider_id, org_id, "Dr. Bench", (REMINDER_LOCATION,)), now
            )
            await repos.catalog.add_type(
                AppointmentType(
                    type_id,
                    org_id,
                    "Follow-up",
                    10,
                    VisitCategory.IN_PERSON,
                    PatientKind.ESTABLISHED,
                ),
                now,
            )
        done = 0
        while done < n:
            size = min(1000, n - done)
            rows = []
            for i in range(done, done + size):
                start = first_start + timedelta(minutes=10 * i)
                rows.append(
                    {
                        "id": new_id("appt"),
                        "org_id": org_id,
                        "patient_id": patient_ids[i % len(patient_ids)],
                        "provider_id": provider_id,
                        "location_id": REMINDER_LOCATION,
                        "appointment_type_id": type_id,
                        "start_at": start,
                        "end_at": start + timedelta(minutes=10),
                        "status": AppointmentStatus.BOOKED.value,
                        "confirmation": "unconfirmed",
                        "version": 1,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            async with sessionmaker() as session, session.begin():
                await session.execute(scheduling_tables.appointment.insert(), rows)
                # The columns the kit's `Timers.schedule` writes, in one multi-row insert
                # per chunk: 100,000 single inserts made the (untimed) seeding take
                # minutes.
                timer_rows = [
                    {
                        "kind": REMINDER_TIMER_KIND,
                        "due_at": now,
                        "payload": {
                            "org_id": org_id,
                            "appointment_id": row["id"],
                            "touch": "1_day_before",
                            "touch_key": f"{row['id']}:1_day_before",
                        },
                        "dedup_key": f"{row['id']}:1_day_before",
                        "created_at": now,
                    }
                    for row in rows
                ]
                await session.execute(scheduling_tables.platform.timer.insert(), timer_rows)
            done += size
            progress.update(task, completed=done)
    finally:
        await engine.dispose()
        progress.remove_task(task)
    return {"seed_seconds": round(time.perf_counter() - began, 1), "due_at": now.isoformat()}


def _span(first: datetime | float | None, last: datetime | float | None) -> float:
    if first is None or last is None:
        return float("nan")
    if isinstance(first, datetime) and isinstance(last, datetime):
        return (last - first).total_seconds()
    assert isinstance(first, float)
    assert isinstance(last, float)
    return last - first


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("nan")


def tenth_rates(moments: list[float]) -> dict[str, float]:
    """Rate over the first and the last tenth of sorted moments (seconds): does a stage
    slow down as its table grows?"""
    k = len(moments) // 10
    if k < 2:
        return {}
    return {
        "first_tenth_per_s": _rate(k - 1, moments[k - 1] - moments[0]),
        "last_tenth_per_s": _rate(k - 1, moments[-1] - moments[-k]),
    }


async def bench_reminders(
    stack: Stack,
    n: int,
    patient_count: int,
    progress: Progress,
    log_dir: Path,
    timeout_s: float,
) -> dict[str, Any]:
    """Reminders for ``n`` appointments: durable timers → ReminderDue through the outbox
    and Kafka → messaging's consumer (contact data from patients) → delivery worker →
    the Twilio double over HTTP. Services run as in production: each under uvicorn in its
    own process, its lifespan running its workers."""
    assert stack.openbao is not None
    setup = progress.add_task("5/5 databases, Vault, identity, patients", total=None)
    names = ("identity", "patients", "scheduling", "messaging")
    migrations = {
        "identity": IDENTITY_MIGRATIONS,
        "patients": PATIENTS_MIGRATIONS,
        "scheduling": SCHEDULING_MIGRATIONS,
        "messaging": MESSAGING_MIGRATIONS,
    }
    dsns = {name: await stack.database(f"bench_rem_{name}") for name in names}
    for name in names:
        await upgrade_async(migrations[name], dsns[name])
    tokens = await asyncio.to_thread(
        bootstrap_vault, stack.openbao.addr, stack.openbao.root_token, list(names)
    )
    prefix = f"bench-rem-{uuid.uuid4().hex[:6]}."
    bootstrap_token = uuid.uuid4().hex
    double = TwilioDouble("AC" + uuid.uuid4().hex, "bench-" + uuid.uuid4().hex)
    recorder = ArrivalRecorder(double.app)
    common = {"CARELOOP_TOPIC_PREFIX": prefix}
    async with serve_in_task(recorder) as twilio_url:
        with service_server(
            "careloop_identity",
            stack,
            dsns["identity"],
            tokens["identity"],
            log_dir / "identity.log",
            {**common, "CARELOOP_BOOTSTRAP_TOKEN": bootstrap_token},
        ) as identity_url:
            async with httpx.AsyncClient(base_url=identity_url, timeout=30) as probe:
                await wait_ready(probe)
            jwks = {"CARELOOP_AUTH_JWKS_URL": f"{identity_url}/.well-known/jwks.json"}
            org_id, admin = await org_admin_headers(identity_url, bootstrap_token)
            with service_server(
                "careloop_patients",
                stack,
                dsns["patients"],
                tokens["patients"],
                log_dir / "patients.log",
                {**common, **jwks},
            ) as patients_url:
                progress.remove_task(setup)
                began = time.perf_counter()
                patient_ids = await register_sms_patients(
                    patients_url, admin, patient_count, progress
                )
                register_s = time.perf_counter() - began
                seeded = await seed_reminder_timers(
                    dsns["scheduling"], org_id, patient_ids, n, progress
                )
                messaging_env = {
                    **common,
                    **jwks,
                    "CARELOOP_DELIVERY_MODE": "provider",
                    "CARELOOP_PATIENTS_URL": patients_url,
                    "CARELOOP_IDENTITY_TOKEN_URL": f"{identity_url}/oauth/token",
                    "CARELOOP_TWILIO_API_BASE": twilio_url,
                    "CARELOOP_TWILIO_ACCOUNT_SID": double.account_sid,
                    "CARELOOP_TWILIO_AUTH_TOKEN": double.auth_token,
                    "CARELOOP_TWILIO_FROM_NUMBER": "+15550009999",
                    "CARELOOP_SECURE_LINK_BASE": "https://portal.example.test/m",
                    # Many appointments share a patient here; no message may be skipped.
                    "CARELOOP_CONTACT_BUDGET_PER_WEEK": str(n),
                    "CARELOOP_DELIVERY_POLL_INTERVAL_S": "0.2",
                }
                with service_server(
                    "careloop_messaging",
                    stack,
                    dsns["messaging"],
                    tokens["messaging"],
                    log_dir / "messaging.log",
                    messaging_env,
                ) as messaging_url:
                    async with httpx.AsyncClient(base_url=messaging_url, timeout=30) as probe:
                        await wait_ready(probe)
                    scheduling_env = {
                        **common,
                        **jwks,
                        "CARELOOP_REMINDER_POLL_INTERVAL_S": "0.5",
                    }
                    spawned = time.time()
                    with service_server(
                        "careloop_scheduling",
                        stack,
                        dsns["scheduling"],
                        tokens["scheduling"],
                        log_dir / "scheduling.log",
                        scheduling_env,
                    ):
                        await watch_reminders(dsns, n, recorder, progress, timeout_s, log_dir)
    figures = await reminder_figures(dsns, n, recorder, double.requests, spawned)
    raw_settings = kit_settings(stack, f"bench-rem-raw-{uuid.uuid4().hex[:6]}.")
    raw_topic = f"{raw_settings.topic_prefix}careloop.scheduling"
    await ensure_topics(raw_settings, [raw_topic])
    raw = await raw_produce_consume(
        raw_settings,
        raw_topic,
        figures.pop("sample_value"),
        figures.pop("sample_headers"),
        n,
        progress,
        f"5/5 raw aiokafka produce + consume, {n:,} ReminderDue-sized records",
    )
    result = {
        "appointments": n,
        "patients": patient_count,
        "register_patients_seconds": round(register_s, 1),
        **seeded,
        **figures,
        "raw": raw,
        "ratio_to_raw": round(figures["end_to_end_per_s"] / raw["events_per_s"], 4),
    }
    return result


async def watch_reminders(
    dsns: dict[str, str],
    n: int,
    recorder: ArrivalRecorder,
    progress: Progress,
    timeout_s: float,
    log_dir: Path,
) -> None:
    """Progress bars until the double has all ``n`` messages (polls counts twice a second)."""
    timer = scheduling_tables.platform.timer
    engines = {name: make_engine(dsns[name]) for name in ("scheduling", "messaging")}
    fired_task = progress.add_task("5/5 timers fired (scheduling)", total=n)
    consumed_task = progress.add_task("5/5 ReminderDue consumed (messaging rows)", total=n)
    delivered_task = progress.add_task("5/5 SMS received by the Twilio double", total=n)
    deadline = time.monotonic() + timeout_s
    last_change, last_seen = time.monotonic(), (-1, -1, -1)
    try:
        while len(recorder.times) < n:
            async with engines["scheduling"].connect() as conn:
                fired = await conn.scalar(
                    select(func.count()).select_from(timer).where(timer.c.fired_at.is_not(None))
                )
            async with engines["messaging"].connect() as conn:
                consumed = await conn.scalar(select(func.count()).select_from(message_table))
            seen = (int(fired or 0), int(consumed or 0), len(recorder.times))
            progress.update(fired_task, completed=seen[0])
            progress.update(consumed_task, completed=seen[1])
            progress.update(delivered_task, completed=seen[2])
            if seen != last_seen:
                last_seen, last_change = seen, time.monotonic()
            if time.monotonic() - last_change > 120:
                raise RuntimeError(
                    f"reminders stalled at fired/consumed/delivered {seen} of {n}; "
                    f"see the service logs in {log_dir}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"reminders: only {seen} of {n} within {timeout_s:.0f} s")
            await asyncio.sleep(0.5)
    finally:
        for task in (fired_task, consumed_task, delivered_task):
            progress.remove_task(task)
        for engine in engines.values():
            await engine.dispose()


async def reminder_figures(
    dsns: dict[str, str], n: int, recorder: ArrivalRecorder, requests: int, spawned: float
) -> dict[str, Any]:
    """Stage rates from the services' own timestamps (same machine, same wall clock)."""
    timer = scheduling_tables.platform.timer
    outbox = scheduling_tables.platform.outbox
    sched = make_engine(dsns["scheduling"])
    msg = make_engine(dsns["messaging"])
    try:
        async with sched.connect() as conn:
            t = (
                await conn.execute(
                    select(
                        func.count().filter(timer.c.fired_at.is_not(None)).label("fired"),
                        func.min(timer.c.fired_at).label("first"),
                        func.max(timer.c.fired_at).label("last"),
                        func.count().filter(timer.c.attempts > 1).label("retried"),
                    )
                )
            ).one()
            o = (
                await conn.execute(
                    select(
                        func.count().label("rows"),
                        func.count().filter(outbox.c.sent_at.is_not(None)).label("sent"),
                        func.max(outbox.c.sent_at).label("last_sent"),
                    ).where(outbox.c.event_type == ReminderDue.event_type)
                )
            ).one()
            fired_moments = [
                row.timestamp()
                for row in await conn.scalars(
                    select(timer.c.fired_at)
                    .where(timer.c.fired_at.is_not(None))
                    .order_by(timer.c.fired_at)
                )
            ]
            sample = (
                await conn.execute(
                    select(outbox.c.headers, outbox.c.payload)
                    .where(outbox.c.event_type == ReminderDue.event_type)
                    .limit(1)
                )
            ).one()
        async with msg.connect() as conn:
            m = (
                await conn.execute(
                    select(
                        func.count().label("rows"),
                        func.count(func.distinct(message_table.c.touch_key)).label("touches"),
                        func.min(message_table.c.created_at).label("first"),
                        func.max(message_table.c.created_at).label("last"),
                    )
                )
            ).one()
            created_moments = [
                row.timestamp()
                for row in await conn.scalars(
                    select(message_table.c.created_at).order_by(message_table.c.created_at)
                )
            ]
            statuses = {
                str(row.status): int(row.n)
                for row in await conn.execute(
                    select(message_table.c.status, func.count().label("n")).group_by(
                        message_table.c.status
                    )
                )
            }
    finally:
        await sched.dispose()
        await msg.dispose()
    arrivals = sorted(recorder.times)
    first_fired = t.first.timestamp() if t.first else None
    last_delivered = arrivals[-1] if arrivals else None
    timers_s = _span(t.first, t.last)
    consumed_s = _span(m.first, m.last)
    delivered_s = _span(arrivals[0] if arrivals else None, last_delivered)
    total_s = _span(first_fired, last_delivered)
    figures: dict[str, Any] = {
        "timers_fired": int(t.fired),
        "timer_retries": int(t.retried),
        "reminder_due_published": int(o.sent),
        "messages": int(m.rows),
        "distinct_touch_keys": int(m.touches),
        "message_statuses": statuses,
        "double_received": len(arrivals),
        "double_requests": requests,
        "timers_seconds": round(timers_s, 2),
        "timers_per_s": _rate(int(t.fired), timers_s),
        "consume_seconds": round(consumed_s, 2),
        "consumed_per_s": _rate(int(m.rows), consumed_s),
        "deliver_seconds": round(delivered_s, 2),
        "delivered_per_s": _rate(len(arrivals), delivered_s),
        "timers_tenths": tenth_rates(fired_moments),
        "consumed_tenths": tenth_rates(created_moments),
        "delivered_tenths": tenth_rates(arrivals),
        "end_to_end_seconds": round(total_s, 2),
        "end_to_end_per_s": _rate(len(arrivals), total_s),
        "first_message_after_first_timer_s": round(_span(first_fired, arrivals[0]), 2)
        if arrivals
        else None,
        "relay_last_sent_after_first_timer_s": round(_span(t.first, o.last_sent), 2),
        "scheduling_start_to_last_delivery_s": round(_span(spawned, last_delivered), 2),
        "sample_value": bytes(sample.payload),
        "sample_headers": [(k, v.encode()) for k, v in sample.headers],
    }
    problems = []
    if int(t.fired) != n or len(arrivals) != n or int(m.rows) != n or int(m.touches) != n:
        problems.append("counts differ from n")
    if statuses.get("skipped") or statuses.get("failed"):
        problems.append(f"statuses {statuses}")
    if problems:
        raise RuntimeError(f"reminders ({n}): {'; '.join(problems)}: {figures}")
    return figures


# --------------------------------------------------------------------------- 8 caregaps

CAREGAPS_AS_OF = date(2026, 6, 30)
CAREGAPS_SEED = 20261208
CAREGAPS_TARGET_S = 30.0
CAREGAPS_TRACED = 10_000


def _caregaps_events() -> list[tuple[float, str, Callable[[random.Random], Any]]]:
    """(weight, kind, codings-and-values maker) for the facts a synthetic chart holds.

    Synthetic only: codes come from the shipped value sets plus ordinary codes no measure
    reads (office visits, a CBC, glucose), so the index sees misses as well as hits."""
    coding = Coding

    def fixed(*codes: Coding) -> Callable[[random.Random], Any]:
        shared = (tuple(codes), ())
        return lambda _rng: shared

    def hba1c(rng: random.Random) -> Any:
        return ((coding("loinc", "4548-4"),), (Quantity(round(rng.uniform(5.0, 11.0), 1), "%"),))

    bp_panel = (coding("loinc", "85354-9"),)
    systolic, diastolic = coding("loinc", "8480-6"), coding("loinc", "8462-4")

    def blood_pressure(rng: random.Random) -> Any:
        return (
            bp_panel,
            (
                Quantity(float(rng.randint(105, 165)), "mm[Hg]", systolic),
                Quantity(float(rng.randint(60, 100)), "mm[Hg]", diastolic),
            ),
        )

    smoking = (coding("loinc", "72166-2"),)
    pack_years = coding("loinc", "8664-5")

    def smoking_history(rng: random.Random) -> Any:
        return (smoking, (Quantity(float(rng.randint(0, 60)), "{pack-years}", pack_years),))

    return [
        (10, "encounter", fixed(coding("cpt", "99213"))),
        (6, "observation", fixed(coding("loinc", "2345-7"))),
        (5, "procedure", fixed(coding("cpt", "85025"))),
        (3, "procedure", fixed(coding("cpt", "77067"))),
        (2, "procedure", fixed(coding("cpt", "45378"))),
        (2, "procedure", fixed(coding("cpt", "82274"))),
        (1, "procedure", fixed(coding("cpt", "81528"))),
        (2, "procedure", fixed(coding("cpt", "88175"))),
        (1, "procedure", fixed(coding("cpt", "87624"))),
        (4, "observation", hba1c),
        (6, "observation", blood_pressure),
        (2, "procedure", fixed(coding("cpt", "92014"))),
        (3, "observation", fixed(coding("loinc", "33914-3"))),
        (2, "observation", fixed(coding("loinc", "9318-7"))),
        (3, "medication-statement", fixed(coding("rxnorm", "83367"))),
        (3, "encounter", fixed(coding("hcpcs", "G0439"))),
        (5, "immunization", fixed(coding("cvx", "150"))),
        (1, "immunization", fixed(coding("cvx", "216"))),
        (1, "immunization", fixed(coding("cvx", "215"))),
        (1, "immunization", fixed(coding("cvx", "33"))),
        (3, "observation", fixed(coding("loinc", "44261-6"))),
        (1, "procedure", fixed(coding("cpt", "71271"))),
        (1, "observation", smoking_history),
        (0.5, "observation", fixed(coding("loinc", "74010-0"))),
        (1, "procedure", fixed(coding("cpt", "77080"))),
        (0.2, "encounter", fixed(coding("hcpcs", "T2042"))),
        (0.1, "condition", fixed(coding("icd-10-cm", "Z90.13"))),
        (0.3, "condition", fixed(coding("icd-10-cm", "N18.6"))),
        (0.5, "condition", fixed(coding("icd-10-cm", "F32.9"))),
    ]


def synthetic_caregaps_patients(n: int, seed: int = CAREGAPS_SEED) -> list[PatientProfile]:
    """N synthetic patients (seeded): ages 0-95, both sexes, diabetes and hypertension
    rising with age as in US prevalence, 3-25 facts each dated within the last 12 years
    (most in the last two)."""
    rng = random.Random(seed)
    events = _caregaps_events()
    weights = [w for w, _, _ in events]
    diabetes = (Coding("icd-10-cm", "E11.9"),)
    hypertension = (Coding("icd-10-cm", "I10"),)
    patients: list[PatientProfile] = []
    for number in range(n):
        age = rng.randint(0, 95)
        birth = CAREGAPS_AS_OF - timedelta(days=age * 365 + rng.randint(0, 364))
        sex = "female" if rng.random() < 0.51 else "male"
        span = min(age * 365, 12 * 365) or 30
        facts: list[Fact] = []
        p_diabetes = 0.002 if age < 18 else 0.04 if age < 45 else 0.15 if age < 65 else 0.25
        p_hypertension = 0.0 if age < 18 else 0.1 if age < 45 else 0.4 if age < 65 else 0.6
        if rng.random() < p_diabetes:
            onset = CAREGAPS_AS_OF - timedelta(days=rng.randint(0, span))
            facts.append(Fact(f"s{number}-dm", "condition", "active", diabetes, onset))
        if rng.random() < p_hypertension:
            onset = CAREGAPS_AS_OF - timedelta(days=rng.randint(0, span))
            facts.append(Fact(f"s{number}-htn", "condition", "active", hypertension, onset))
        for index in range(rng.randint(3, 25) - len(facts)):
            _, kind, make = rng.choices(events, weights)[0]
            codes, quantities = make(rng)
            status = (
                "entered-in-error"
                if rng.random() < 0.02
                else ("active" if kind in ("condition", "medication-statement") else "final")
            )
            # Charts hold more recent care than old: about 600 days back on average.
            back = min(span, int(rng.expovariate(1 / 600)))
            on = CAREGAPS_AS_OF - timedelta(days=back)
            facts.append(Fact(f"s{number}-{index}", kind, status, codes, on, None, quantities))
        coverage = ("medicare",) if age >= 65 else ("commercial",)
        patients.append(
            PatientProfile(f"synthetic-{number:06d}", birth, sex, tuple(facts), coverage)
        )
    return patients


def bench_caregaps(n: int) -> dict[str, Any]:
    """Evaluate the whole measure library for N synthetic patients in this process."""
    library = load_caregaps_library()
    began = time.perf_counter()
    patients = synthetic_caregaps_patients(n)
    generated_s = time.perf_counter() - began
    facts = sum(len(p.facts) for p in patients)
    rss_data_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    # Baseline: touch the same facts and count their codes, nothing else.
    began = time.perf_counter()
    counts: dict[str, int] = {}
    for patient in patients:
        for fact in patient.facts:
            for code in fact.codes:
                counts[code.code] = counts.get(code.code, 0) + 1
    baseline_s = time.perf_counter() - began

    outcomes = dict.fromkeys(("met", "gap", "excluded", "not-applicable"), 0)
    began = time.perf_counter()
    for patient in patients:
        for finding in evaluate_caregaps(library, patient, CAREGAPS_AS_OF):
            outcomes[finding.outcome] += 1
    evaluate_s = time.perf_counter() - began
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    # The evaluator's own allocations, traced over a slice (tracing slows every call).
    traced = patients[:CAREGAPS_TRACED]
    fresh = load_caregaps_library()
    tracemalloc.start()
    for patient in traced:
        evaluate_caregaps(fresh, patient, CAREGAPS_AS_OF)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    measures = len(library.measures)
    return {
        "patients": n,
        "measures": measures,
        "facts": facts,
        "as_of": CAREGAPS_AS_OF.isoformat(),
        "seed": CAREGAPS_SEED,
        "synthetic": True,
        "generate_seconds": round(generated_s, 2),
        "seconds": round(evaluate_s, 3),
        "target_seconds": CAREGAPS_TARGET_S,
        "within_target": evaluate_s < CAREGAPS_TARGET_S,
        "patients_per_s": round(n / evaluate_s, 1),
        "patient_measures_per_s": round(n * measures / evaluate_s, 1),
        "outcomes": outcomes,
        "baseline_seconds": round(baseline_s, 3),
        "baseline_facts_per_s": round(facts / baseline_s, 1),
        "ratio_to_baseline": round(evaluate_s / baseline_s, 1),
        "tracemalloc_peak_kib": round(peak / 1024, 1),
        "tracemalloc_patients": len(traced),
        "ru_maxrss_mib_after_data": round(rss_data_kib / 1024, 1),
        "ru_maxrss_mib": round(rss_kib / 1024, 1),
    }


# --------------------------------------------------------------------------- care-gaps job


async def _seed_caregaps(
    dsn: str, vault_addr: str, token: str, patients: list[PatientProfile]
) -> None:
    """Seal and store the synthetic patients the way care-gaps keeps them (its codec,
    its field port and its repositories); untimed."""
    cipher = FieldCipher(KeyRing(Vault(vault_addr, token), CAREGAPS_FIELDS_KEY), caregaps_field_key)
    engine = make_engine(dsn)
    now = datetime.now(UTC)
    try:
        for start in range(0, len(patients), 500):
            async with make_sessionmaker(engine)() as session, session.begin():
                store = caregaps_repositories(session).patients
                for patient in patients[start : start + 500]:
                    sealed = await cipher.seal_field(
                        session,
                        caregaps_demographics_text(patient.birth_date, patient.sex),
                        org_id=ORG,
                        table="patient_profile",
                        column="demographics",
                        row_id=patient.patient_id,
                    )
                    await store.set_demographics(ORG, patient.patient_id, sealed, now)
                    for fact in patient.facts:
                        sealed = await cipher.seal_field(
                            session,
                            caregaps_fact_text(fact),
                            org_id=ORG,
                            table="clinical_fact",
                            column="fact",
                            row_id=fact.fact_id,
                        )
                        await store.record_fact(
                            ORG,
                            patient.patient_id,
                            fact.fact_id,
                            version=1,
                            fact_ct=sealed,
                            now=now,
                        )
    finally:
        await engine.dispose()


async def _run_evaluation(
    client: httpx.AsyncClient, n: int, progress: Progress, label: str
) -> dict[str, Any]:
    """POST /evaluations, then GET its status until done; timed from the POST."""
    running = progress.add_task(label, total=n)
    t0 = time.perf_counter()
    started = await client.post("/evaluations", json={})
    if started.status_code != 202:
        raise RuntimeError(f"caregaps-job: POST /evaluations {started.status_code} {started.text}")
    job_id = started.json()["job_id"]
    deadline = time.monotonic() + 3600
    while True:
        job = (await client.get(f"/evaluations/{job_id}")).raise_for_status().json()
        progress.update(running, completed=job["done"])
        if job["status"] in ("done", "failed"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"caregaps-job: job {job_id} not done within 3600 s: {job}")
        await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - t0
    progress.remove_task(running)
    if job["status"] != "done" or job["done"] != n:
        raise RuntimeError(f"caregaps-job: job ended {job['status']}: {job}")
    return {
        "seconds": round(elapsed, 2),
        "patients_per_s": round(n / elapsed, 1),
        "changed": job["changed"],
        "total": job["total"],
    }


async def bench_caregaps_job(
    stack: Stack, n: int, progress: Progress, log_file: Path
) -> dict[str, Any]:
    """`n` synthetic patients (section 8's generator) seeded sealed into care-gaps' store,
    then one population evaluation job over HTTP, twice (the second changes nothing);
    baseline in the same run: the pure evaluator over the same patients."""
    assert stack.openbao is not None
    patients = synthetic_caregaps_patients(n)
    facts = sum(len(p.facts) for p in patients)
    library = load_caregaps_library()
    began = time.perf_counter()
    for patient in patients:
        evaluate_caregaps(library, patient, CAREGAPS_AS_OF)
    pure_s = time.perf_counter() - began

    dsn = await stack.database("bench_caregaps")
    await upgrade_async(CAREGAPS_MIGRATIONS, dsn)
    tokens = await asyncio.to_thread(
        bootstrap_vault, stack.openbao.addr, stack.openbao.root_token, ["caregaps"]
    )
    seeding = progress.add_task(f"caregaps-job: sealing {n:,} patients into the store", total=None)
    began = time.perf_counter()
    await _seed_caregaps(dsn, stack.openbao.addr, tokens["caregaps"], patients)
    seed_s = time.perf_counter() - began
    progress.remove_task(seeding)
    del patients

    issuer = TestTokenIssuer(SystemClock())
    access = issuer.mint(
        org=ORG,
        sub="user-bench",
        roles=["org_admin"],
        loc=["*"],
        amr=["pwd", "otp"],
        exp=int(time.time()) + 3000,
    )
    settings = kit_settings(stack, "bench-api.")
    await ensure_topics(settings, [f"{settings.topic_prefix}careloop.caregaps"])
    setup = progress.add_task("caregaps-job: starting the care-gaps service", total=None)
    async with serve_jwks(issuer) as jwks_url:
        with service_server(
            "careloop_caregaps",
            stack,
            dsn,
            tokens["caregaps"],
            log_file,
            # Nothing in a population job calls patients or identity; unreachable on purpose.
            {
                "CARELOOP_AUTH_JWKS_URL": jwks_url,
                "CARELOOP_PATIENTS_URL": "http://127.0.0.1:9",
                "CARELOOP_IDENTITY_TOKEN_URL": "http://127.0.0.1:9/oauth/token",
            },
        ) as url:
            async with httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {access}"}, timeout=60
            ) as client:
                await wait_ready(client)
                progress.remove_task(setup)
                first = await _run_evaluation(
                    client, n, progress, f"caregaps-job: evaluating {n:,} patients"
                )
                first["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
                second = await _run_evaluation(
                    client, n, progress, f"caregaps-job: again, {n:,} patients (idempotent)"
                )
    if second["changed"] != 0:
        raise RuntimeError(f"caregaps-job: the second run changed {second['changed']} gaps")
    extrapolated = first["seconds"] * 100_000 / n
    return {
        "patients": n,
        "facts": facts,
        "synthetic": True,
        "seed": CAREGAPS_SEED,
        "seed_seconds_untimed": round(seed_s, 1),
        "first": first,
        "second": second,
        "seconds": first["seconds"],
        "patients_per_s": first["patients_per_s"],
        "changed": first["changed"],
        "pure_seconds": round(pure_s, 3),
        "pure_patients_per_s": round(n / pure_s, 1),
        "ratio_job_to_pure": round(first["seconds"] / pure_s, 1),
        "extrapolated_100k_seconds": round(extrapolated, 1),
        "extrapolation_note": "linear extrapolation from this run's rate, not measured",
        "target_seconds": CAREGAPS_TARGET_S,
        "extrapolated_within_target": extrapolated < CAREGAPS_TARGET_S,
    }


# --------------------------------------------------------------------------- output


def metric_rows(results: dict[str, Any]) -> list[tuple[str, float | str, str]]:
    rows: list[tuple[str, float | str, str]] = []
    p = results.get("pipeline")
    r = results.get("raw")
    if p:
        rows.append(("outbox → Kafka → idempotent consumer", p["events_per_s"], "events/s"))
        rows.append(("  outbox relay publish only", p["relay_publish_events_per_s"], "events/s"))
    if r:
        rows.append(("raw aiokafka produce + consume", r["events_per_s"], "events/s"))
        rows.append(("  raw aiokafka produce only", r["produce_events_per_s"], "events/s"))
    if p and r:
        rows.append(("ratio careloop / raw", round(p["events_per_s"] / r["events_per_s"], 3), "x"))
    lat = results.get("latency")
    if lat and lat.get("count"):
        label = f"latency commit → applied @ {lat['rate_per_s']:g}/s"
        for q in ("p50", "p95", "p99"):
            rows.append((f"{label} {q}", lat[f"{q}_ms"], "ms"))
    api = results.get("api")
    if api:
        for name, label in (
            ("post", "POST /patients"),
            ("get", "GET /patients/{id}"),
            ("get_via_gateway", "GET /patients/{id} via gateway"),
        ):
            phase = api.get(name)
            if phase is None:
                continue
            rows.append((label, phase["requests_per_s"], "req/s"))
            if phase.get("count"):
                rows.append((f"  {label} p50", phase["p50_ms"], "ms"))
                rows.append((f"  {label} p99", phase["p99_ms"], "ms"))
            if phase["errors"]:
                rows.append((f"  {label} errors", json.dumps(phase["errors"]), ""))
        if api.get("get_via_gateway") and api["get"]["requests_per_s"]:
            ratio = api["get_via_gateway"]["requests_per_s"] / api["get"]["requests_per_s"]
            rows.append(("ratio reads via gateway / direct", round(ratio, 3), "x"))
    rem = results.get("reminders")
    if rem:
        n = f"{rem['appointments']:,}"
        rows.append((f"reminders end to end ({n} appointments)", rem["end_to_end_per_s"], "msg/s"))
        rows.append(("  reminders end to end, total time", rem["end_to_end_seconds"], "s"))
        rows.append(("  timers fired (scheduling TimerWorker)", rem["timers_per_s"], "timers/s"))
        rows.append(("  ReminderDue consumed (messaging rows)", rem["consumed_per_s"], "events/s"))
        rows.append(("  SMS delivered to the Twilio double", rem["delivered_per_s"], "msg/s"))
        rows.append(
            (f"  raw aiokafka produce + consume ({n})", rem["raw"]["events_per_s"], "events/s")
        )
        rows.append(("ratio reminders / raw", rem["ratio_to_raw"], "x"))
    ref = results.get("referrals")
    if ref:
        n = f"{ref['referrals']:,}"
        rows.append(
            (f"referral transitions ({n} whole loops)", ref["transitions_per_s"], "steps/s")
        )
        rows.append(("  referrals through their loop", ref["referrals_per_s"], "referrals/s"))
        if ref["step"].get("count"):
            rows.append(("  one transition p50", ref["step"]["p50_ms"], "ms"))
            rows.append(("  one transition p99", ref["step"]["p99_ms"], "ms"))
        rows.append(
            ("  baseline GET /referrals/{id}", ref["baseline_reads"]["requests_per_s"], "req/s")
        )
        rows.append(("ratio transitions / reads", ref["ratio_to_reads"], "x"))
        if ref["errors"]:
            rows.append(("  referral errors", json.dumps(ref["errors"]), ""))
    cg = results.get("caregaps")
    if cg:
        n = f"{cg['patients']:,}"
        label = f"care gaps: {n} synthetic patients x {cg['measures']} measures"
        rows.append((label, cg["seconds"], "s"))
        rows.append(("  target for the same", cg["target_seconds"], "s"))
        rows.append(("  patients evaluated", cg["patients_per_s"], "patients/s"))
        rows.append(("  patient-measures evaluated", cg["patient_measures_per_s"], "findings/s"))
        rows.append(("  baseline: count the same facts' codes", cg["baseline_seconds"], "s"))
        rows.append(("ratio evaluation / baseline", cg["ratio_to_baseline"], "x"))
        peak = f"  tracemalloc peak ({cg['tracemalloc_patients']:,} patients)"
        rows.append((peak, cg["tracemalloc_peak_kib"], "KiB"))
        rows.append(("  ru_maxrss (data set and evaluation)", cg["ru_maxrss_mib"], "MiB"))
    job = results.get("caregaps-job")
    if job:
        n = f"{job['patients']:,}"
        rows.append((f"care-gaps population job ({n} patients)", job["seconds"], "s"))
        rows.append(("  patients evaluated by the job", job["patients_per_s"], "patients/s"))
        rows.append(("  gaps changed", job["changed"], "gaps"))
        rows.append(("  second run (idempotent)", job["second"]["seconds"], "s"))
        rows.append(("  second run: gaps changed", job["second"]["changed"], "gaps"))
        rows.append(("  baseline: pure evaluator, same patients", job["pure_seconds"], "s"))
        rows.append(("ratio job / pure evaluator", job["ratio_job_to_pure"], "x"))
        extrapolated = job["extrapolated_100k_seconds"]
        rows.append(("  100,000 patients, EXTRAPOLATED (not measured)", extrapolated, "s"))
        rows.append(("  target for 100,000", job["target_seconds"], "s"))
    tsk = results.get("tasks")
    if tsk:
        n = f"{tsk['stalled_referrals']:,}"
        rows.append((f"stalled referrals into tasks ({n})", tsk["tasks_per_s"], "tasks/s"))
        raw = tsk["baseline_raw"]["events_per_s"]
        rows.append(("  raw aiokafka produce + consume (same records)", raw, "events/s"))
        rows.append(("ratio tasks / raw", tsk["ratio_to_raw"], "x"))
    return rows


def print_results(data: dict[str, Any]) -> None:
    m = data["machine"]
    console.print(
        f"\n[bold]Machine:[/] {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, "
        f"{m['os']}; Python {m['python']}; Kafka {m['kafka']}; "
        f"PostgreSQL {data.get('postgres_version') or 'not started'}; "
        f"load average at start {m['load_average_at_start']}"
    )
    table = Table(title="Careloop benchmarks", show_lines=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("unit")
    for metric, value, unit in metric_rows(data["results"]):
        shown = f"{value:,.1f}" if isinstance(value, float) and unit != "x" else str(value)
        table.add_row(metric, shown, unit)
    console.print(table)
    console.print(
        "[dim]Everything (broker, database, Vault, service and load generator) shares the "
        f"same {m['cores']} cores; the API client and server compete for CPU.[/]"
    )
    loads = ", ".join(
        f"{name} {phase['load_average_after'][0]:.2f}"
        for name, phase in data["results"].items()
        if "load_average_after" in phase
    )
    if loads:
        console.print(f"[dim]1-minute load average after each phase: {loads}[/]")
    console.print(f"Total run time {data['runtime_s']:.0f} s")


def throughput_svg(results: dict[str, Any]) -> str:
    """A small horizontal bar chart of events/s (hand-written SVG)."""
    p, r = results["pipeline"], results["raw"]
    bars = [
        ("Careloop: outbox → Kafka → idempotent consumer", p["events_per_s"], "#2f6fb0"),
        ("Careloop: outbox relay publish only", p["relay_publish_events_per_s"], "#7fa8d6"),
        ("Raw aiokafka: produce + consume", r["events_per_s"], "#d07a2b"),
        ("Raw aiokafka: produce only", r["produce_events_per_s"], "#ebb27f"),
    ]
    rem = results.get("reminders")
    if rem:
        n = f"{rem['appointments']:,}"
        bars += [
            (
                f"Careloop: reminders end to end, timer → SMS at the double ({n})",
                rem["end_to_end_per_s"],
                "#3d8b57",
            ),
            (
                f"Raw aiokafka: produce + consume ({n} records)",
                rem["raw"]["events_per_s"],
                "#d07a2b",
            ),
        ]
    width, left, right, bar_h, gap, top = 760, 20, 110, 26, 34, 58
    scale = (width - left - right) / max(v for _, v, _ in bars)
    height = top + len(bars) * (bar_h + gap) + 10
    ratio = p["events_per_s"] / r["events_per_s"]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{left}" y="24" font-size="16" font-weight="bold">'
        f"Event throughput, {p['events']:,} events, one broker (events/s; reminders: "
        "messages/s)</text>",
        f'<text x="{left}" y="44" font-size="12" fill="#555">careloop / raw = {ratio:.3f}; '
        "higher is better</text>",
    ]
    for i, (label, value, colour) in enumerate(bars):
        y = top + i * (bar_h + gap)
        w = max(1.0, value * scale)
        parts.append(f'<text x="{left}" y="{y + 12}" font-size="12">{label}</text>')
        parts.append(
            f'<rect x="{left}" y="{y + 16}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>'
        )
        parts.append(
            f'<text x="{left + w + 6:.1f}" y="{y + 16 + bar_h * 0.7:.1f}" font-size="12">'
            f"{value:,.0f}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace, stack: Stack, base: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    assert stack.postgres is not None
    conn = await stack.postgres._connect()
    try:
        postgres_version = await conn.fetchval("SHOW server_version")
        postgres_settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("fsync", "synchronous_commit", "shared_buffers", "max_connections")
        }
    finally:
        await conn.close()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        dbs = await pipeline_databases(stack)
        try:
            if "pipeline" in args.only:
                results["pipeline"] = with_load(
                    await bench_pipeline(stack, dbs, args.events, progress)
                )
                console.print(
                    f"pipeline: {results['pipeline']['events_per_s']:,.0f} events/s "
                    f"({args.events:,} in {results['pipeline']['seconds']:.1f} s)"
                )
            if "raw" in args.only:
                results["raw"] = with_load(await bench_raw(stack, dbs, args.events, progress))
                console.print(f"raw aiokafka: {results['raw']['events_per_s']:,.0f} events/s")
            if "latency" in args.only:
                results["latency"] = with_load(
                    await bench_latency(stack, dbs, args.rate, args.duration, progress)
                )
                lat = results["latency"]
                console.print(
                    f"latency: p50 {lat.get('p50_ms')} ms, p95 {lat.get('p95_ms')} ms, "
                    f"p99 {lat.get('p99_ms')} ms"
                )
        finally:
            await dbs.dispose()
        if "api" in args.only:
            results["api"] = with_load(
                await bench_api(
                    stack, args.api_seconds, args.workers, progress, base / "patients-service.log"
                )
            )
            api = results["api"]
            console.print(
                f"api: POST {api['post']['requests_per_s']:,.0f} req/s, "
                f"GET {api['get']['requests_per_s']:,.0f} req/s"
            )
        if "reminders" in args.only:
            results["reminders"] = with_load(
                await bench_reminders(
                    stack,
                    args.appointments,
                    min(args.reminder_patients, args.appointments),
                    progress,
                    base,
                    args.reminders_timeout,
                )
            )
            rem = results["reminders"]
            console.print(
                f"reminders: {rem['appointments']:,} delivered end to end in "
                f"{rem['end_to_end_seconds']:.1f} s ({rem['end_to_end_per_s']:,.0f} messages/s); "
                f"raw aiokafka {rem['raw']['events_per_s']:,.0f} records/s"
            )
        if "referrals" in args.only:
            results["referrals"] = with_load(
                await bench_referrals(
                    stack, args.referrals, args.workers, progress, base / "referrals-service.log"
                )
            )
            ref = results["referrals"]
            console.print(
                f"referrals: {ref['referrals']:,} loops, {ref['transitions']:,} transitions in "
                f"{ref['seconds']:.1f} s ({ref['transitions_per_s']:,.0f} transitions/s)"
            )
        if "tasks" in args.only:
            results["tasks"] = with_load(
                await bench_tasks(stack, args.tasks, progress, base / "tasks-service.log")
            )
            tsk = results["tasks"]
            console.print(
                f"tasks: {tsk['stalled_referrals']:,} stalled referrals into {tsk['tasks']:,} "
                f"tasks in {tsk['seconds']:.1f} s ({tsk['tasks_per_s']:,.0f} tasks/s); raw "
                f"aiokafka {tsk['baseline_raw']['events_per_s']:,.0f} records/s"
            )
        if "caregaps-job" in args.only:
            results["caregaps-job"] = with_load(
                await bench_caregaps_job(
                    stack, args.caregaps_job_patients, progress, base / "caregaps-service.log"
                )
            )
            job = results["caregaps-job"]
            console.print(
                f"caregaps-job: {job['patients']:,} patients in {job['seconds']:.1f} s "
                f"({job['patients_per_s']:,.0f} patients/s, {job['changed']:,} gaps changed); "
                f"again {job['second']['seconds']:.1f} s, {job['second']['changed']} changed; "
                f"pure evaluator {job['pure_seconds']:.2f} s (x{job['ratio_job_to_pure']}); "
                f"100,000 extrapolated: {job['extrapolated_100k_seconds']:.0f} s "
                f"(target {job['target_seconds']:.0f} s)"
            )
    return {
        "postgres_version": postgres_version,
        "postgres_settings": postgres_settings,
        "results": results,
    }


def with_load(result: dict[str, Any]) -> dict[str, Any]:
    """Stamp a phase's result with the load average at its end (the machine may be shared)."""
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def wait_for_idle(limit_s: float) -> None:
    """Wait (at most ``limit_s``) until the 1-minute load average drops below 1."""
    deadline = time.monotonic() + limit_s
    with console.status("waiting for the machine to go quiet ...") as status:
        while time.monotonic() < deadline:
            load = os.getloadavg()[0]
            if load < 1.0:
                return
            status.update(f"waiting for the machine to go quiet (load average {load:.2f}) ...")
            time.sleep(5)
    console.print(f"[yellow]machine still busy (load average {os.getloadavg()[0]:.2f}); going on")


SECTIONS = (
    "pipeline",
    "raw",
    "latency",
    "api",
    "reminders",
    "referrals",
    "tasks",
    "caregaps",
    "caregaps-job",
)
INFRASTRUCTURE_FREE = frozenset({"caregaps"})
"""Sections that run in this process alone: no broker, database or Vault is started for them."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events for 1 and 2")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s for 3")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds for 3")
    parser.add_argument("--api-seconds", type=float, default=10.0, help="seconds per API phase")
    parser.add_argument("--workers", type=int, default=32, help="concurrent API workers")
    parser.add_argument(
        "--appointments",
        type=int,
        default=100_000,
        help="appointments (one reminder each) for 5",
    )
    parser.add_argument(
        "--reminder-patients",
        type=int,
        default=1_000,
        help="patients registered for 5; appointments are spread over them",
    )
    parser.add_argument(
        "--reminders-timeout",
        type=float,
        default=12 * 3600.0,
        help="seconds 5 may take before the run gives up",
    )
    parser.add_argument(
        "--referrals",
        type=int,
        default=10_000,
        help="referrals taken through their whole loop for 6",
    )
    parser.add_argument(
        "--tasks", type=int, default=5_000, help="stalled-referral events made into tasks for 7"
    )
    parser.add_argument(
        "--caregaps-patients",
        type=int,
        default=100_000,
        help="synthetic patients evaluated over the whole measure library for 8",
    )
    parser.add_argument(
        "--caregaps-job-patients",
        type=int,
        default=10_000,
        help="synthetic patients seeded for the care-gaps population job (caregaps-job)",
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke check")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results JSON")
    parser.add_argument("--svg", type=Path, default=DEFAULT_SVG, help="throughput chart (SVG)")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for the 1-minute load average to drop below 1",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the server data and logs directory"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="run the services of 4 and 5 under cProfile, writing <package>.prof into DIR",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.duration, args.api_seconds = 2_000, 3.0, 3.0
        args.appointments, args.reminder_patients = 2_000, 200
        args.referrals = 500
        args.tasks = 500
        args.caregaps_patients = 10_000
        args.caregaps_job_patients = 1_000
    args.only = {part.strip() for part in args.only.split(",") if part.strip()}
    unknown = args.only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    global PROFILE_DIR
    args = parse_args(argv)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        PROFILE_DIR = args.profile.resolve()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    # A fresh broker answers the first group join with a transient "coordinator not
    # available"; the client retries. Every run checks its counts, so nothing hides here.
    logging.getLogger("aiokafka.consumer.group_coordinator").setLevel(logging.CRITICAL)
    if args.wait_idle > 0:
        wait_for_idle(args.wait_idle)
    began = time.monotonic()
    machine = machine_info()
    base = Path(tempfile.mkdtemp(prefix="careloop-bench-"))
    stack = Stack(base)
    failed = True
    caregaps: dict[str, Any] | None = None
    if "caregaps" in args.only:
        # First, before the infrastructure is up: it is CPU-bound and would share the cores.
        with console.status(f"8: care gaps for {args.caregaps_patients:,} synthetic patients ..."):
            caregaps = with_load(bench_caregaps(args.caregaps_patients))
        console.print(
            f"caregaps: {caregaps['patients']:,} patients x {caregaps['measures']} measures in "
            f"{caregaps['seconds']:.2f} s ({caregaps['patients_per_s']:,.0f} patients/s; "
            f"target {caregaps['target_seconds']:.0f} s); baseline code count "
            f"{caregaps['baseline_seconds']:.2f} s"
        )
    outcome: dict[str, Any] = {"postgres_version": None, "postgres_settings": None, "results": {}}
    try:
        if args.only - INFRASTRUCTURE_FREE:
            with console.status("starting Kafka, PostgreSQL and OpenBao ..."):
                stack.start()
            console.print(f"infrastructure ready: {stack.startup_s} (seconds)")
            outcome = asyncio.run(run(args, stack, base))
        failed = False
    except KeyboardInterrupt:
        console.print("[yellow]interrupted")
        return 130
    finally:
        with console.status("stopping the infrastructure ..."):
            stack.stop()
        if failed or args.keep:
            console.print(f"server data and logs kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    data = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "postgres_version": outcome["postgres_version"],
        "postgres_settings": outcome["postgres_settings"],
        "infrastructure_startup_s": stack.startup_s,
        "config": {
            "events": args.events,
            "rate_per_s": args.rate,
            "duration_s": args.duration,
            "api_seconds": args.api_seconds,
            "workers": args.workers,
            "appointments": args.appointments,
            "reminder_patients": min(args.reminder_patients, args.appointments),
            "caregaps_patients": args.caregaps_patients,
            "caregaps_job_patients": args.caregaps_job_patients,
            "benchmarks": sorted(args.only),
        },
        "results": outcome["results"] | ({"caregaps": caregaps} if caregaps else {}),
        "runtime_s": round(time.monotonic() - began, 1),
        "note": "broker, database, Vault, service and load generator share the same cores",
    }
    data["metrics"] = [
        {"metric": m.strip(), "value": v, "unit": u} for m, v, u in metric_rows(data["results"])
    ]
    if "api" in data["results"]:
        data["results"]["api"].pop("server_log", None)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(data, indent=2) + "\n")
    if "pipeline" in data["results"] and "raw" in data["results"]:
        args.svg.parent.mkdir(parents=True, exist_ok=True)
        args.svg.write_text(throughput_svg(data["results"]))
    print_results(data)
    console.print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
