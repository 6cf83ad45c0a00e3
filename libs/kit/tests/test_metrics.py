"""`/metrics` of a real service app: the request histogram by route template, the outbox
and timer backlogs, consumer lag and dead letters, against real PostgreSQL, Kafka and
OpenBao.

The app is a kit-only service that runs one catalogued consumer group (the topic
catalogue refuses any other), with a route that takes a patient id in its path.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import APIRouter
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import CONSUMER_GROUPS, AppointmentConfirmed, Envelope, Event
from careloop_kit.bus.kafka import make_producer, topic_name
from careloop_kit.bus.outbox import Outbox
from careloop_kit.db import add_platform_tables, make_engine
from careloop_kit.db.tables import service_metadata
from careloop_kit.db.timers import Timers
from careloop_kit.service import ConsumerSpec, Runtime, ServiceSpec, create_service_app
from careloop_kit.settings import KitSettings
from careloop_kit.testing.apps import running_app

pytestmark = pytest.mark.service

# A group that reads one stream; the app plays the service that runs it.
GROUP = CONSUMER_GROUPS["careloop.messaging.reminders"]
(STREAM,) = GROUP.topics
ORG = "org-metrics"

metadata = service_metadata()
tables = add_platform_tables(metadata)
router = APIRouter()


@router.get("/patients/{patient_id}")
async def read_patient(patient_id: str) -> dict[str, str]:
    """A route whose path carries an identifier."""
    return {"id": patient_id}


@dataclass
class Gate:
    """Holds the consumer's handler until the test opens it."""

    entered: asyncio.Event
    opened: asyncio.Event

    async def handle(self, session: AsyncSession, envelope: Envelope, event: Event) -> None:
        self.entered.set()
        await self.opened.wait()


@dataclass
class Service:
    client: httpx.AsyncClient
    settings: KitSettings
    runtime: Runtime
    gate: Gate

    async def metrics(self) -> str:
        response = await self.client.get("/metrics")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        return response.text

    async def metrics_until(self, pattern: str, *, timeout_s: float = 30) -> str:
        """The first `/metrics` page that has a line matching `pattern`."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            page = await self.metrics()
            if re.search(pattern, page, re.MULTILINE):
                return page
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no line matches {pattern!r} in:\n{page}")
            await asyncio.sleep(0.25)

    async def produce(self, headers: list[tuple[str, bytes]], value: bytes) -> None:
        producer: AIOKafkaProducer = make_producer(self.settings, client_id="metrics-test")
        await producer.start()
        try:
            await producer.send_and_wait(
                topic_name(self.settings, STREAM), value=value, key=b"k", headers=headers
            )
        finally:
            await producer.stop()


@pytest.fixture
async def service(
    make_database: Callable[[str], Awaitable[str]],
    kafka_bootstrap: str,
    vault_addr: str,
    vault_tokens: dict[str, str],
    topic_prefix: str,
) -> AsyncIterator[Service]:
    dsn = await make_database("metrics")
    engine = make_engine(dsn)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    await engine.dispose()
    settings = KitSettings(
        environment="test",
        database_url=dsn,
        kafka_bootstrap=kafka_bootstrap,
        vault_addr=vault_addr,
        vault_token=vault_tokens[GROUP.service],
        topic_prefix=topic_prefix,
        log_json=False,
        consumer_max_retries=1,
    )
    gate = Gate(asyncio.Event(), asyncio.Event())
    gate.opened.set()
    spec = ServiceSpec(
        name=GROUP.service,
        metadata=metadata,
        tables=tables,
        routers=[router],
        consumers=[
            ConsumerSpec(
                name=GROUP.name,
                topics=[STREAM],
                handlers=lambda _runtime: {AppointmentConfirmed.event_type: gate.handle},
            )
        ],
    )
    app = create_service_app(spec, settings)
    async with running_app(app) as client:
        yield Service(client, settings, app.state.runtime, gate)


def value_of(page: str, metric: str, **labels: str) -> float:
    """The value of the one series of `metric` carrying (at least) `labels`."""
    for line in page.splitlines():
        name, _, rest = line.partition("{")
        if name != metric:
            continue
        series, _, value = rest.rpartition("} ")
        if all(f'{key}="{label}"' in series for key, label in labels.items()):
            return float(value)
    raise AssertionError(f"no {metric} series with {labels} in:\n{page}")


def confirmed(appointment_id: str) -> AppointmentConfirmed:
    now = datetime.now(UTC)
    return AppointmentConfirmed(
        appointment_id=appointment_id,
        patient_id="pat-metrics",
        org_id=ORG,
        location_id="loc-metrics",
        provider_id="prov-metrics",
        appointment_type_id="type-metrics",
        start_at=now + timedelta(days=1),
        end_at=now + timedelta(days=1, minutes=30),
        status="booked",
        confirmation="confirmed",
        occurred_at=now,
    )


async def test_requests_are_counted_by_route_template_never_by_raw_path(
    service: Service,
) -> None:
    for _ in range(3):
        response = await service.client.get("/patients/pat-5550100?phone=5550100")
        assert response.status_code == 200
    missing = await service.client.get("/no-such-route/pat-5550100")
    assert missing.status_code == 404

    page = await service.metrics()
    count = value_of(
        page,
        "http_server_request_duration_seconds_count",
        http_route="/patients/{patient_id}",
        http_request_method="GET",
        http_response_status_code="200",
    )
    assert count == 3
    assert 'service_name="careloop-messaging"' in page
    # Neither the identifier in the path nor the query string reaches the page.
    assert "5550100" not in page
    # Probes and scrapes are left out of the request metrics.
    await service.client.get("/healthz")
    assert "/healthz" not in await service.metrics()
    assert "/metrics" not in await service.metrics()


async def test_outbox_backlog_counts_rows_the_relay_has_not_published(
    service: Service,
) -> None:
    await service.metrics_until(r"^careloop_outbox_backlog\{[^}]*\} 0\.0$")
    lock_id = zlib.crc32(f"careloop-outbox-relay:{GROUP.service}".encode())
    sessionmaker = service.runtime.sessionmaker
    outbox = Outbox(tables, service="scheduling", topic_prefix=service.settings.topic_prefix)
    # Holding the relay's leader lock stops publishing; the backlog sample goes on.
    async with sessionmaker() as holder, holder.begin():
        await holder.execute(select(func.pg_advisory_xact_lock(lock_id)))
        async with sessionmaker() as session, session.begin():
            for n in range(2):
                await outbox.add(session, confirmed(f"appt-held-{n}"), org_id=ORG)
        page = await service.metrics_until(r"^careloop_outbox_backlog\{[^}]*\} 2\.0$")
        assert value_of(page, "careloop_outbox_oldest_unsent_age_seconds") >= 0
    await service.metrics_until(r"^careloop_outbox_backlog\{[^}]*\} 0\.0$")


async def test_timer_backlog_counts_due_timers_nobody_fired(service: Service) -> None:
    await service.metrics_until(r"^careloop_timer_backlog\{[^}]*\} 0\.0$")
    now = datetime.now(UTC)
    timers = Timers(tables)
    async with service.runtime.sessionmaker() as session, session.begin():
        await timers.schedule(session, "metrics-check", now - timedelta(minutes=10), {})
        await timers.schedule(session, "metrics-check", now - timedelta(minutes=1), {})
        await timers.schedule(session, "metrics-check", now + timedelta(hours=1), {})
    page = await service.metrics_until(r"^careloop_timer_backlog\{[^}]*\} 2\.0$")
    assert value_of(page, "careloop_timer_oldest_due_age_seconds") >= 600


async def test_consumer_lag_grows_while_a_handler_is_stuck_and_drains_after(
    service: Service,
) -> None:
    group = topic_name(service.settings, GROUP.group_id)
    topic = topic_name(service.settings, STREAM)
    lag_line = (
        rf'^careloop_consumer_lag\{{consumer_group="{re.escape(group)}",[^}}]*'
        r'partition="(\d+)",'
        rf'topic="{re.escape(topic)}"\}} '
    )
    await service.metrics_until(lag_line + r"0\.0$")
    service.gate.opened.clear()
    async with service.runtime.sessionmaker() as session, session.begin():
        outbox = Outbox(tables, service="scheduling", topic_prefix=service.settings.topic_prefix)
        for _ in range(3):
            # One key: one partition, consumed in order.
            await outbox.add(session, confirmed("appt-lag"), org_id=ORG, key="appt-lag")
    await asyncio.wait_for(service.gate.entered.wait(), timeout=30)
    page = await service.metrics_until(lag_line + r"3\.0$")
    stuck = re.search(lag_line + r"3\.0$", page, re.MULTILINE)
    assert stuck is not None
    partition = stuck.group(1)
    service.gate.opened.set()
    await service.metrics_until(lag_line.replace(r"(\d+)", partition) + r"0\.0$")
    assert not re.search(lag_line + r"[1-9]", await service.metrics(), re.MULTILINE)


async def test_a_poison_record_increments_the_dead_letter_counter(service: Service) -> None:
    group = topic_name(service.settings, GROUP.group_id)
    assert "careloop_consumer_dead_letters_total{" not in await service.metrics()
    await service.produce([("ce_id", b"no-other-cloudevents-headers")], b"{}")
    page = await service.metrics_until(r"^careloop_consumer_dead_letters_total\{")
    assert value_of(page, "careloop_consumer_dead_letters_total", consumer_group=group) == 1
    assert value_of(page, "careloop_consumer_dead_letters_total", reason="poison") == 1
    await service.produce([], b"not json either")
    await service.metrics_until(
        rf'^careloop_consumer_dead_letters_total\{{consumer_group="{re.escape(group)}"'
        r'.*reason="poison"\} 2\.0$'
    )
