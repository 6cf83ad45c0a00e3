"""Crash safety of the stall-to-task path (issue 12, must-show 2): the tasks service runs
as its own OS process (`careloop serve tasks`, as in production) against the test's
database, and is SIGKILLed while it consumes a stream of referral stalls and
escalations (and some stalls replayed under new event ids), then restarted on the same
database. Afterwards exactly one task and one escalation per referral stage exist, in
the tables and in the outbox."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from careloop_contracts import Envelope, prefixed, to_headers
from careloop_contracts.referrals import ReferralEscalated, ReferralEvent, ReferralStalled
from careloop_kit.infra.ports import free_port
from careloop_kit.testing.kafka import CRASH_TEST_SESSION_TIMEOUT_MS
from careloop_tasks.settings import TasksSettings

pytestmark = [pytest.mark.service, pytest.mark.crash]

REFERRALS = 150
REPLAYED = 30


def _events(org_id: str) -> list[ReferralEvent]:
    at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    events: list[ReferralEvent] = []
    for number in range(REFERRALS):
        snapshot = {
            "referral_id": f"ref-{number}",
            "patient_id": f"pat-{number % 40}",
            "org_id": org_id,
            "location_id": "loc-north",
            "direction": "inbound",
            "urgency": "routine",
            "stage": "triaged",
            "task_status": "accepted",
            "version": 2,
            "occurred_at": at,
            "stage_entered_at": at - timedelta(days=1),
        }
        events.append(ReferralStalled(**snapshot, escalate_at=at + timedelta(hours=4)))
        if number < REPLAYED:
            events.append(ReferralStalled(**snapshot, escalate_at=at + timedelta(hours=4)))
        events.append(ReferralEscalated(**snapshot))
    return events


async def _publish(bootstrap: str, prefix: str, events: list[ReferralEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            envelope = Envelope(
                id=str(uuid.uuid4()),
                type=event.event_type,
                source="/careloop/referrals",
                time=datetime.now(UTC),
                subject=event.referral_id,
                org_id=event.org_id,
                location_id=event.location_id,
            )
            await producer.send_and_wait(
                prefixed(event.topic, prefix),
                value=event.to_json(),
                key=event.partition_key().encode(),
                headers=to_headers(envelope),
            )
            await asyncio.sleep(0.01)  # a stream, so the kills land in the middle of it
    finally:
        await producer.stop()


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


@contextlib.asynccontextmanager
async def _serving(env: dict[str, str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "careloop_cli.main",
            "serve",
            "tasks",
            env=env,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(base_url=env["URL"], trust_env=False) as client:
            deadline = time.monotonic() + 60
            while True:
                assert process.returncode is None, _read(log)
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        break
                assert time.monotonic() < deadline, _read(log)
                await asyncio.sleep(0.2)
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=20)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _counts(dsn: str) -> tuple[int, int, int, int, int]:
    engine = create_async_engine(dsn)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT (SELECT count(*) FROM task),"
                        " (SELECT count(*) FROM task WHERE escalated_at IS NOT NULL),"
                        " (SELECT count(DISTINCT dedup_key) FROM task),"
                        " (SELECT count(*) FROM outbox_message"
                        "   WHERE event_type = 'careloop.tasks.task.created.v1'),"
                        " (SELECT count(*) FROM outbox_message"
                        "   WHERE event_type = 'careloop.tasks.task.escalated.v1')"
                    )
                )
            ).one()
    finally:
        await engine.dispose()
    return tuple(int(v) for v in row)  # type: ignore[return-value]


async def test_killed_and_restarted_the_service_still_makes_one_task_and_one_escalation_each(
    tasks_settings: TasksSettings, unique_id: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CARELOOP_STATE_DIR": tempfile.mkdtemp(prefix="careloop-tasks-crash-"),
        "CARELOOP_ENVIRONMENT": "test",
        "CARELOOP_DATABASE_URL": tasks_settings.database_url.get_secret_value(),
        "CARELOOP_KAFKA_BOOTSTRAP": tasks_settings.kafka_bootstrap,
        "CARELOOP_VAULT_ADDR": tasks_settings.vault_addr,
        "CARELOOP_VAULT_TOKEN": tasks_settings.vault_token.get_secret_value(),
        "CARELOOP_TOPIC_PREFIX": tasks_settings.topic_prefix or "",
        "CARELOOP_HTTP_PORT": str(port),
        "CARELOOP_AUTH_JWKS_URL": "http://127.0.0.1:9/unused-jwks.json",
        "CARELOOP_LOG_JSON": "false",
        "CARELOOP_LOG_LEVEL": "WARNING",
        # The killed process's partitions move to the restarted one after this, not 10 s.
        "CARELOOP_KAFKA_SESSION_TIMEOUT_MS": str(CRASH_TEST_SESSION_TIMEOUT_MS),
        "URL": f"http://127.0.0.1:{port}",
    }
    log = tmp_path / "tasks.log"
    dsn = tasks_settings.database_url.get_secret_value()
    async with _serving(env, log) as process:
        # Published once the service made its topics, as a stream it is consuming.
        publishing = asyncio.create_task(
            _publish(
                tasks_settings.kafka_bootstrap,
                tasks_settings.topic_prefix or "",
                _events(f"org-{unique_id}"),
            )
        )
        # Killed in the middle: once it has made some of the tasks, not all.
        deadline = time.monotonic() + 60
        while (await _counts(dsn))[0] < random.randint(10, 40):
            assert time.monotonic() < deadline, "the service made no tasks"
            await asyncio.sleep(0.05)
        process.kill()  # SIGKILL: no shutdown, whatever transaction is open is lost
        await process.wait()
    assert (await _counts(dsn))[0] < REFERRALS, "the kill landed after the stream ended"
    async with _serving(env, log):
        await publishing
        deadline = time.monotonic() + 120
        while (counts := await _counts(dsn))[1] < REFERRALS:
            assert time.monotonic() < deadline, f"not all applied: {counts}"
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # anything still in flight would show now
        counts = await _counts(dsn)
    assert counts == (REFERRALS, REFERRALS, REFERRALS, REFERRALS, REFERRALS)
