"""Crash safety of the reminder run (issue 4, must-show 6).

Scheduling and messaging run as their own OS processes (`careloop serve`, as in
production), each with its own database, against the session's real PostgreSQL, Kafka
and OpenBao. Identity (tokens, JWKS) and the Twilio double run in this process; patients
runs as a process too but is never killed: it only answers messaging's contact lookups.

The services take time only from the system clock, so the touches are made to come due
within the run through scheduling's own settings: only the booking confirmation is on,
and each appointment type gets quiet hours that end a few seconds after the bookings,
one type per wave. A confirmation booked inside quiet hours waits for their end, so the
durable timers fall due in waves while scheduling and messaging are SIGKILLed at random
moments and restarted.

Afterwards the full history is checked: every planned touch (a `reminder` timer in
scheduling's database) fired and produced exactly one `ReminderDue` (by event id, per
touch key; the relay may publish one twice, which the consumer's inbox absorbs), messaging
holds exactly one `sent` message per touch key, and the Twilio double received every
expected SMS. Sending is at-least-once towards the provider (messaging's README): a kill
after Twilio accepted a message and before its row is marked sent resends it, so
duplicates at the double are counted and must not exceed one per delivery slot
(`delivery_concurrency`) per messaging kill.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import hvac
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from careloop_cli.registry import service
from careloop_contracts import ReminderDue
from careloop_contracts.identity import LocationCreated
from careloop_identity.app import create_app as create_identity
from careloop_identity.settings import IdentitySettings
from careloop_kit.auth import totp
from careloop_kit.db import add_platform_tables, make_engine, service_metadata
from careloop_kit.db.migrate import upgrade_async
from careloop_kit.infra.ports import free_port
from careloop_kit.testing.apps import serve_in_task
from careloop_kit.testing.kafka import CRASH_TEST_SESSION_TIMEOUT_MS, header, read_topic
from careloop_messaging.store.tables import message
from careloop_messaging.testing.twilio_double import TwilioDouble
from careloop_scheduling.testing.locations import org_of, publish_location

pytestmark = [pytest.mark.service, pytest.mark.crash]

APPOINTMENTS = 150
DELIVERY_CONCURRENCY = 4
PATIENTS = 30
# Long enough for three kills and restarts of scheduling while timers are still due,
# even when a restart takes 20 s on a busy machine: the worker fires a wave in one batch.
WAVES = 16
WAVE_SPACING_S = 4.0
KILLS_EACH = 3
LOCATION = "loc-crash"
BOOTSTRAP = "crash-reminders-bootstrap"
PASSWORD = "correct-Horse-42-battery"
REMINDER_TIMER = "reminder"

# Read-only views of the platform tables; the services own and migrate them.
PLATFORM = add_platform_tables(service_metadata())


@dataclass
class ServiceProcess:
    """One service run by `careloop serve`, SIGKILLed and restarted by the test."""

    name: str
    env: dict[str, str]
    log_dir: Path
    url: str
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0

    @property
    def log(self) -> Path:
        return self.log_dir / f"{self.name}-{self.starts}.log"

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    async def start(self) -> float:
        """Start it and wait until `/readyz` answers 200; returns the seconds it took."""
        began = time.monotonic()
        self.starts += 1
        with self.log.open("wb") as log:
            # Popen (not asyncio's) so the synchronous teardown can always kill it;
            # it returns as soon as the child is forked.
            self.process = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "careloop_cli.main", "serve", self.name],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        async with httpx.AsyncClient(base_url=self.url, trust_env=False) as client:
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(f"{self.name} exited at start:\n{self.tail()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        return time.monotonic() - began
                if time.monotonic() - began > 60:
                    raise AssertionError(f"{self.name} not ready within 60s:\n{self.tail()}")
                await asyncio.sleep(0.1)

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"{self.name} died on its own:\n{self.tail()}")

    async def kill(self) -> None:
        self.check_alive()
        assert self.process is not None
        self.process.kill()
        await asyncio.to_thread(self.process.wait, 10)
        self.kills += 1

    async def terminate(self) -> int | None:
        """SIGTERM and wait for the clean shutdown; its exit status."""
        if self.process is None or self.process.poll() is not None:
            return None
        self.process.terminate()
        try:
            return await asyncio.to_thread(self.process.wait, 30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"{self.name} ignored SIGTERM for 30s") from None

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def processes() -> Iterator[list[ServiceProcess]]:
    """Every process the test starts; killed synchronously at the end even if the async
    teardown fails, so none outlives the test."""
    started: list[ServiceProcess] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.close()


def service_env(
    name: str, *, dsn: str, port: int, vault_token: str, common: dict[str, str], **extra: str
) -> dict[str, str]:
    env = {
        **os.environ,
        **common,
        # Away from a developer's local stack env files.
        "CARELOOP_STATE_DIR": tempfile.mkdtemp(prefix=f"careloop-{name}-"),
        "CARELOOP_DATABASE_URL": dsn,
        "CARELOOP_HTTP_PORT": str(port),
        "CARELOOP_VAULT_TOKEN": vault_token,
    }
    env.update({f"CARELOOP_{key.upper()}": value for key, value in extra.items()})
    return env


async def admin_of_new_org(identity_url: str) -> tuple[str, dict[str, str]]:
    """(org id, bearer headers) of a new organization's first admin, signed in with a
    second factor (patients asks org admins for one)."""
    email = f"admin-{uuid.uuid4().hex[:8]}@example.org"
    async with httpx.AsyncClient(base_url=identity_url) as client:
        org = await client.post(
            "/organizations",
            json={
                "name": "Crash Clinic (synthetic)",
                "admin": {"email": email, "display_name": "Admin", "password": PASSWORD},
            },
            headers={"X-Bootstrap-Token": BOOTSTRAP},
        )
        assert org.status_code == 201, org.text
        credentials = {"org_id": org.json()["id"], "email": email, "password": PASSWORD}
        first = await client.post("/auth/login", json=credentials)
        assert first.status_code == 200, first.text
        bearer = {"Authorization": f"Bearer {first.json()['access_token']}"}
        enrolled = await client.post("/auth/mfa/enroll", headers=bearer)
        secret = totp.from_base32(enrolled.json()["secret"])
        now = datetime.now(UTC)
        verified = await client.post(
            "/auth/mfa/verify", json={"code": totp.totp(secret, now)}, headers=bearer
        )
        assert verified.status_code == 200, verified.text
        next_code = totp.totp(secret, now + timedelta(seconds=totp.STEP_S))
        signed_in = await client.post("/auth/login", json={**credentials, "otp": next_code})
        assert signed_in.status_code == 200, signed_in.text
    return org.json()["id"], {"Authorization": f"Bearer {signed_in.json()['access_token']}"}


async def gather_limited(jobs: list[Callable[[], Awaitable[Any]]], limit: int = 8) -> list[Any]:
    """Run the jobs with at most `limit` at once (a 2-core machine serves them all)."""
    gate = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return await asyncio.gather(*(run(job) for job in jobs))


def phone_of(index: int) -> tuple[str, str]:
    """(as typed into the record, E.164 as sent): one number per patient, so what the
    double receives maps back to that patient's touches."""
    digits = f"555{index:07d}"
    return f"+1 {digits[:3]} {digits[3:6]} {digits[6:]}", f"+1{digits}"


@dataclass
class Run:
    """The running system and the probes the test reads it with."""

    scheduling: ServiceProcess
    messaging: ServiceProcess
    scheduling_db: AsyncEngine
    messaging_db: AsyncEngine
    double: TwilioDouble
    admin: dict[str, str]
    patients: httpx.AsyncClient
    kafka_bootstrap: str
    topic_prefix: str
    restarts_s: list[float] = field(default_factory=list)

    async def scalar(self, engine: AsyncEngine, query: Any) -> int:
        async with engine.connect() as conn:
            return int(await conn.scalar(query) or 0)

    async def fired(self) -> int:
        timer = PLATFORM.timer
        return await self.scalar(
            self.scheduling_db,
            select(func.count()).where(
                timer.c.kind == REMINDER_TIMER, timer.c.fired_at.is_not(None)
            ),
        )

    async def sent(self) -> int:
        return await self.scalar(
            self.messaging_db, select(func.count()).where(message.c.status == "sent")
        )

    async def unsent_outbox(self, engine: AsyncEngine) -> int:
        outbox = PLATFORM.outbox
        return await self.scalar(engine, select(func.count()).where(outbox.c.sent_at.is_(None)))

    async def settled(self, planned: int) -> bool:
        return (
            await self.fired() >= planned
            and await self.sent() >= planned
            and await self.unsent_outbox(self.scheduling_db) == 0
            and await self.unsent_outbox(self.messaging_db) == 0
        )


@pytest.fixture
async def run(
    processes: list[ServiceProcess],
    make_database: Callable[[str], Awaitable[str]],
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    vault_root_token: str,
    topic_prefix: str,
    unique_id: str,
    tmp_path: Path,
) -> AsyncIterator[Run]:
    names = ("identity", "patients", "scheduling", "messaging")
    dsns = {name: await make_database(name) for name in names}
    for name, dsn in dsns.items():
        await upgrade_async(service(name).migrations, dsn)
    # Messaging refuses to start without its address key; each test gets its own.
    key_path = f"careloop/messaging/recipient-key-{unique_id}"
    hvac.Client(url=vault_addr, token=vault_root_token).secrets.kv.v2.create_or_update_secret(
        path=key_path,
        secret={"key": base64.b64encode(secrets.token_bytes(32)).decode()},
        mount_point="secret",
    )
    double = TwilioDouble("AC" + secrets.token_hex(16), "test-" + secrets.token_hex(16))
    identity_app = create_identity(
        IdentitySettings(
            environment="test",
            database_url=dsns["identity"],
            kafka_bootstrap=kafka_bootstrap,
            vault_addr=vault_addr,
            vault_token=vault_tokens["identity"],
            topic_prefix=topic_prefix,
            bootstrap_token=BOOTSTRAP,
            log_json=False,
        )
    )
    async with (
        serve_in_task(identity_app) as identity_url,
        serve_in_task(double.app) as twilio_url,
    ):
        jwks_url = f"{identity_url}/.well-known/jwks.json"
        common = {
            "CARELOOP_ENVIRONMENT": "test",
            "CARELOOP_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "CARELOOP_VAULT_ADDR": vault_addr,
            "CARELOOP_TOPIC_PREFIX": topic_prefix,
            "CARELOOP_AUTH_JWKS_URL": jwks_url,
            "CARELOOP_LOG_JSON": "false",
            "CARELOOP_LOG_LEVEL": "WARNING",
            # A killed messaging's partitions move to its restarted process after this.
            "CARELOOP_KAFKA_SESSION_TIMEOUT_MS": str(CRASH_TEST_SESSION_TIMEOUT_MS),
            "PYTHONUNBUFFERED": "1",
        }
        ports = {name: free_port() for name in names[1:]}
        patients_url = f"http://127.0.0.1:{ports['patients']}"
        # Patients only answers messaging's contact lookups: never killed.
        patients_process = ServiceProcess(
            "patients",
            service_env(
                "patients",
                dsn=dsns["patients"],
                port=ports["patients"],
                vault_token=vault_tokens["patients"],
                common=common,
            ),
            tmp_path,
            patients_url,
        )
        scheduling = ServiceProcess(
            "scheduling",
            service_env(
                "scheduling",
                dsn=dsns["scheduling"],
                port=ports["scheduling"],
                vault_token=vault_tokens["scheduling"],
                common=common,
                # Waves 4 s apart: a 5 s scan would merge them.
                reminder_poll_interval_s="0.2",
                max_slot_results="5000",
            ),
            tmp_path,
            f"http://127.0.0.1:{ports['scheduling']}",
        )
        messaging = ServiceProcess(
            "messaging",
            service_env(
                "messaging",
                dsn=dsns["messaging"],
                port=ports["messaging"],
                vault_token=vault_tokens["messaging"],
                common=common,
                delivery_mode="provider",
                patients_url=patients_url,
                identity_token_url=f"{identity_url}/oauth/token",
                recipient_key_secret_path=key_path,
                twilio_api_base=twilio_url,
                twilio_account_sid=double.account_sid,
                twilio_auth_token=double.auth_token,
                twilio_from_number="+15550009999",
                secure_link_base="https://portal.example.test/m",
                delivery_poll_interval_s="0.1",
                # Nothing here should fail retryably; if it does, do not wait 30 s.
                delivery_backoff_s="1",
                # Each test patient has several visits; the budget is not under test.
                contact_budget_per_week=str(APPOINTMENTS),
                delivery_concurrency=str(DELIVERY_CONCURRENCY),
            ),
            tmp_path,
            f"http://127.0.0.1:{ports['messaging']}",
        )
        processes.extend([patients_process, scheduling, messaging])
        await asyncio.gather(patients_process.start(), scheduling.start(), messaging.start())
        _, admin = await admin_of_new_org(identity_url)
        scheduling_db = make_engine(dsns["scheduling"], pool_size=2)
        messaging_db = make_engine(dsns["messaging"], pool_size=2)
        try:
            async with httpx.AsyncClient(base_url=patients_url, timeout=30) as patients:
                yield Run(
                    scheduling,
                    messaging,
                    scheduling_db,
                    messaging_db,
                    double,
                    admin,
                    patients,
                    kafka_bootstrap,
                    topic_prefix,
                )
        finally:
            await asyncio.gather(
                scheduling.terminate(), messaging.terminate(), patients_process.terminate()
            )
            await scheduling_db.dispose()
            await messaging_db.dispose()


async def register_patients(run: Run, count: int) -> list[str]:
    """`count` patients who accept automated SMS, each with a number of their own."""

    async def register(index: int) -> str:
        typed, _ = phone_of(index)
        created = await run.patients.post(
            "/patients",
            json={
                "location_id": LOCATION,
                "name": {"family": "Crashtest", "given": [f"Patient{index}"]},
                "birth_date": "1980-01-01",
                "sex": "female",
                "phones": [typed],
                "preferred_language": "en",
                "preferences": {"allowed_channels": ["sms"], "preferred_channel": "sms"},
            },
            headers=run.admin,
        )
        assert created.status_code == 201, created.text
        return str(created.json()["id"])

    return list(await gather_limited([partial(register, i) for i in range(count)]))


async def set_up_waves(client: httpx.AsyncClient, run: Run) -> list[str]:
    """A practice whose confirmations fall due in waves: the day-offset reminders off,
    and per appointment type quiet hours that end `WAVE_SPACING_S` apart, starting a
    little after the bookings. Returns the appointment type id of each wave."""

    async def ok(response: Awaitable[httpx.Response], status: int = 200) -> dict[str, Any]:
        answer = await response
        assert answer.status_code == status, answer.text
        body: dict[str, Any] = answer.json()
        return body

    admin = run.admin
    # UTC as the location's zone: quiet hours below are then plain UTC wall times. The
    # location reaches scheduling (a process of its own here) as identity's event.
    producer = AIOKafkaProducer(bootstrap_servers=run.kafka_bootstrap)
    await producer.start()
    try:
        await publish_location(
            producer,
            f"{run.topic_prefix}{LocationCreated.topic}",
            org_of(admin),
            LOCATION,
            time_zone="UTC",
            name="Crash Test Clinic",
        )
    finally:
        await producer.stop()
    deadline = time.monotonic() + 60
    while (await client.get(f"/locations/{LOCATION}", headers=admin)).status_code != 200:
        assert time.monotonic() < deadline, "scheduling never applied the location event"
        await asyncio.sleep(0.2)
    await ok(
        client.put(
            "/reminder-settings",
            json={
                "touches": {"3_days_before": {"enabled": False}, "1_day_before": {"enabled": False}}
            },
            headers=admin,
        )
    )
    for name in ("Dr. Crash", "Dr. Restart"):
        provider = await ok(
            client.post(
                "/providers", json={"display_name": name, "location_ids": [LOCATION]}, headers=admin
            ),
            201,
        )
        for weekday in range(7):
            await ok(
                client.post(
                    f"/providers/{provider['id']}/availability",
                    json={
                        "location_id": LOCATION,
                        "weekday": weekday,
                        "start": "00:00",
                        "end": "23:45",
                    },
                    headers=admin,
                ),
                201,
            )
    types = [
        await ok(
            client.post(
                "/appointment-types",
                json={"name": f"Wave {wave}", "duration_minutes": 15},
                headers=admin,
            ),
            201,
        )
        for wave in range(WAVES)
    ]
    now = datetime.now(UTC).replace(microsecond=0)
    # Roughly the time the bookings take on this machine, so the first wave comes due
    # once they are done (an earlier wave would only fire during the bookings).
    first_due = now + timedelta(seconds=5 + APPOINTMENTS * 0.1)
    for wave, kind in enumerate(types):
        quiet_end = first_due + timedelta(seconds=wave * WAVE_SPACING_S)
        await ok(
            client.put(
                f"/appointment-types/{kind['id']}/reminder-settings",
                json={
                    "quiet_hours_start": (now - timedelta(hours=1)).time().isoformat(),
                    "quiet_hours_end": quiet_end.time().isoformat(),
                },
                headers=admin,
            )
        )
    return [str(kind["id"]) for kind in types]


async def book(run: Run, patient_ids: list[str], type_ids: list[str]) -> list[str]:
    """One appointment per entry of `patient_ids`, at least 6 hours ahead (every confirmation fires
    before its visit); the appointment type picks the wave. Returns their ids."""
    async with httpx.AsyncClient(base_url=run.scheduling.url, timeout=30) as client:
        start = datetime.now(UTC) + timedelta(hours=6)
        slots = await client.get(
            "/slots",
            params={
                "appointment_type_id": type_ids[0],
                "location_id": LOCATION,
                "from": start.isoformat(),
                "to": (start + timedelta(days=4)).isoformat(),
            },
            headers=run.admin,
        )
        assert slots.status_code == 200, slots.text
        items = slots.json()["items"]
        assert len(items) >= len(patient_ids), f"only {len(items)} slots"

        async def one(index: int, patient_id: str) -> str:
            slot = items[index]
            booked = await client.post(
                "/appointments",
                json={
                    "patient_id": patient_id,
                    "provider_id": slot["provider_id"],
                    "appointment_type_id": type_ids[index % len(type_ids)],
                    "location_id": LOCATION,
                    "start_at": slot["start_at"],
                },
                headers=run.admin,
            )
            assert booked.status_code == 201, booked.text
            return str(booked.json()["id"])

        return list(await gather_limited([partial(one, i, p) for i, p in enumerate(patient_ids)]))


async def crash_repeatedly(
    proc: ServiceProcess,
    progress: Callable[[], Awaitable[int]],
    work_left: Callable[[], Awaitable[bool]],
    rng: random.Random,
    run: Run,
    at_kill: list[int],
) -> None:
    """SIGKILL `proc` `KILLS_EACH` times, each time once it is making progress again (a
    kill of a process still catching up would test less), and restart it at once."""
    for _ in range(KILLS_EACH):
        before = await progress()
        deadline = time.monotonic() + 30
        while await progress() == before and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(rng.uniform(0.0, 1.5))
        if not await work_left():
            return
        at_kill.append(await progress())
        await proc.kill()
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        run.restarts_s.append(await proc.start())


def report(capsys: pytest.CaptureFixture[str], message_text: str) -> None:
    with capsys.disabled():
        print(f"\n[reliability] {message_text}", flush=True)


async def test_reminder_run_survives_scheduling_and_messaging_crashes(
    run: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    began = time.monotonic()

    patient_ids = await register_patients(run, PATIENTS)
    async with httpx.AsyncClient(base_url=run.scheduling.url, timeout=30) as client:
        type_ids = await set_up_waves(client, run)
    # Several visits per patient: registering a patient costs more than booking.
    booked_for = [patient_ids[i % PATIENTS] for i in range(APPOINTMENTS)]
    appointment_ids = await book(run, booked_for, type_ids)
    booked_s = time.monotonic() - began

    # The plan, from scheduling's own database: one confirmation timer per appointment.
    timer = PLATFORM.timer
    async with run.scheduling_db.connect() as conn:
        planned_rows = (
            await conn.execute(
                select(timer.c.dedup_key, timer.c.due_at).where(timer.c.kind == REMINDER_TIMER)
            )
        ).all()
    planned = {str(row.dedup_key) for row in planned_rows}
    assert planned == {f"{a}:confirmation" for a in appointment_ids}
    expected = Counter(phone_of(index % PATIENTS)[1] for index in range(APPOINTMENTS))
    due = sorted(row.due_at for row in planned_rows)
    fired_before_chaos = await run.fired()

    async def scheduling_work_left() -> bool:
        return await run.fired() < len(planned) or (await run.unsent_outbox(run.scheduling_db) > 0)

    async def messaging_work_left() -> bool:
        return await run.sent() < len(planned)

    scheduling_kills: list[int] = []  # reminder timers fired at each kill
    messaging_kills: list[int] = []  # messages sent at each kill
    await asyncio.gather(
        crash_repeatedly(
            run.scheduling, run.fired, scheduling_work_left, rng, run, scheduling_kills
        ),
        crash_repeatedly(run.messaging, run.sent, messaging_work_left, rng, run, messaging_kills),
    )
    chaos_s = time.monotonic() - began - booked_s

    deadline = time.monotonic() + 90
    while not await run.settled(len(planned)):
        run.scheduling.check_alive()
        run.messaging.check_alive()
        assert time.monotonic() < deadline, (
            f"not settled in 90s: fired {await run.fired()}, sent {await run.sent()} "
            f"of {len(planned)}"
        )
        await asyncio.sleep(0.2)
    settle_s = time.monotonic() - began - booked_s - chaos_s

    # Every planned touch fired once, none parked after failing.
    async with run.scheduling_db.connect() as conn:
        timers = (
            await conn.execute(
                select(timer.c.dedup_key, timer.c.fired_at, timer.c.cancelled_at).where(
                    timer.c.kind == REMINDER_TIMER
                )
            )
        ).all()
        outbox = PLATFORM.outbox
        staged = (
            await conn.execute(
                select(outbox.c.event_id, outbox.c.payload).where(
                    outbox.c.event_type == ReminderDue.event_type
                )
            )
        ).all()
    assert all(t.fired_at is not None and t.cancelled_at is None for t in timers)

    # Exactly one ReminderDue per touch was committed, and the topic carries no other.
    staged_keys = Counter(json.loads(bytes(row.payload))["touch_key"] for row in staged)
    assert set(staged_keys) == planned
    assert max(staged_keys.values()) == 1, staged_keys.most_common(3)
    records = await read_topic(
        run.kafka_bootstrap, f"{run.topic_prefix}careloop.scheduling", timeout_s=30
    )
    due_records = [r for r in records if header(r, "ce_type") == ReminderDue.event_type]
    ids_by_touch: dict[str, set[str]] = {}
    for record in due_records:
        touch_key = json.loads(record.value or b"{}")["touch_key"]
        ids_by_touch.setdefault(touch_key, set()).add(str(header(record, "ce_id")))
    assert set(ids_by_touch) == planned
    assert all(len(ids) == 1 for ids in ids_by_touch.values())
    duplicates_on_topic = len(due_records) - len(planned)

    # Exactly one message per touch, every one sent.
    async with run.messaging_db.connect() as conn:
        rows = (
            await conn.execute(select(message.c.touch_key, message.c.status, message.c.provider_id))
        ).all()
    assert Counter(row.touch_key for row in rows) == Counter(planned)
    assert {row.status for row in rows} == {"sent"}

    # Every expected SMS reached the provider; repeats only from kills inside the send
    # window, so at most one per delivery slot per messaging kill.
    received = Counter(m.to for m in run.double.messages)
    assert set(received) == set(expected), "a message went to a stranger"
    assert all(received[phone] >= count for phone, count in expected.items()), "a message was lost"
    duplicates_at_provider = sum(received.values()) - len(planned)
    assert {row.provider_id for row in rows} <= {m.sid for m in run.double.messages}

    report(
        capsys,
        f"reminder crash: seed={seed} touches={len(planned)} "
        f"scheduling SIGKILLs={run.scheduling.kills} (fired at each: {scheduling_kills}) "
        f"messaging SIGKILLs={run.messaging.kills} (sent at each: {messaging_kills}) "
        f"ReminderDue duplicates on topic={duplicates_on_topic} "
        f"duplicates at provider={duplicates_at_provider} "
        f"fired before the kills={fired_before_chaos} "
        f"due from {due[0]:%H:%M:%S} to {due[-1]:%H:%M:%S} "
        f"restarts {min(run.restarts_s):.1f}-{max(run.restarts_s):.1f}s; "
        f"{time.monotonic() - began:.1f}s (set-up+booking {booked_s:.1f}s, "
        f"kills {chaos_s:.1f}s, settling {settle_s:.1f}s)",
    )
    # A kill can catch every delivery slot between the provider's answer and the commit.
    assert duplicates_at_provider <= run.messaging.kills * DELIVERY_CONCURRENCY
    assert run.scheduling.kills >= 3, scheduling_kills
    assert run.messaging.kills >= 3, messaging_kills
    # The kills really happened while there was work left, not after it was done.
    assert sum(1 for fired in scheduling_kills if fired < len(planned)) >= 3, scheduling_kills
    assert sum(1 for sent in messaging_kills if sent < len(planned)) >= 3, messaging_kills
