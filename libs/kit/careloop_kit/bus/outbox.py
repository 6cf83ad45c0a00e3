"""Transactional outbox: events are rows written in the caller's transaction.

`Outbox.add` never commits; the request or handler boundary does, so the state
change and its events are committed together or not at all. `OutboxRelay`
publishes committed rows in id order with an idempotent, acks=all producer and
marks them sent. A crash between publish and mark re-publishes the batch; the
consumers' inbox makes that harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from datetime import datetime
from uuid import uuid4

from aiokafka import AIOKafkaProducer
from opentelemetry import propagate
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careloop_contracts import Envelope, Event, to_headers
from careloop_kit.clock import Clock, SystemClock
from careloop_kit.db.tables import PlatformTables
from careloop_kit.metrics import BACKLOG_SAMPLE_INTERVAL_S, Backlog

log = logging.getLogger(__name__)


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span, to ride along in event headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


class Outbox:
    """Writes integration events into the service's outbox table."""

    def __init__(
        self,
        tables: PlatformTables,
        *,
        service: str,
        topic_prefix: str = "",
        clock: Clock | None = None,
    ) -> None:
        self._table = tables.outbox
        self.service = service
        self._prefix = topic_prefix
        self._clock = clock or SystemClock()

    @property
    def own_topic(self) -> str:
        """This service's stream topic (prefixed)."""
        return f"{self._prefix}careloop.{self.service}"

    async def add(
        self,
        session: AsyncSession,
        event: Event,
        *,
        org_id: str,
        key: str | None = None,
        subject: str | None = None,
        location_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> Envelope:
        """Stage `event` for publication in the caller's transaction; returns its envelope.

        The key defaults to the event's partition key (the patient id for patient events).
        """
        key = key if key is not None else event.partition_key()
        topic = f"{self._prefix}{event.topic_for(self.service)}"
        envelope = Envelope(
            id=str(uuid4()),
            type=event.event_type,
            source=f"/careloop/{self.service}",
            time=self._clock.now(),
            subject=subject if subject is not None else key,
            org_id=org_id,
            location_id=location_id,
            correlation_id=correlation_id,
            causation_id=causation_id,
            traceparent=current_traceparent(),
        )
        await session.execute(
            self._table.insert().values(
                event_id=envelope.id,
                event_type=envelope.type,
                topic=topic,
                key=key,
                headers=[[k, v.decode()] for k, v in to_headers(envelope)],
                payload=event.model_dump_json().encode(),
                created_at=envelope.time,
            )
        )
        return envelope


class OutboxRelay:
    """Publishes committed outbox rows to Kafka, in order, at least once.

    One relay per service is active at a time (a transaction-scoped advisory
    lock elects it), which keeps per-key order across replicas; the others wait.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        tables: PlatformTables,
        producer: AIOKafkaProducer,
        *,
        service: str,
        batch_size: int = 500,
        poll_interval_s: float = 0.05,
        clock: Clock | None = None,
        backlog_interval_s: float = BACKLOG_SAMPLE_INTERVAL_S,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._tables = tables
        self._table = tables.outbox
        self._producer = producer
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._clock = clock or SystemClock()
        self._lock_id = zlib.crc32(f"careloop-outbox-relay:{service}".encode())
        self.published = 0
        self.last_error: str | None = None
        self.backlog: Backlog | None = None
        """Unsent rows as last sampled (every replica samples, leader or not)."""
        self._backlog_interval_s = backlog_interval_s
        self._backlog_sampled_at: float | None = None

    async def publish_batch(self) -> int:
        """Publish one batch of unsent rows; returns how many were published."""
        table = self._table
        async with self._sessionmaker() as session, session.begin():
            leader = await session.scalar(select(func.pg_try_advisory_xact_lock(self._lock_id)))
            if not leader:
                return 0
            rows = (
                await session.execute(
                    select(table.c.id, table.c.topic, table.c.key, table.c.headers, table.c.payload)
                    .where(table.c.sent_at.is_(None))
                    .order_by(table.c.id)
                    .limit(self._batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            futures = [
                await self._producer.send(
                    row.topic,
                    value=row.payload,
                    key=row.key.encode() if row.key else None,
                    headers=[(k, v.encode()) for k, v in row.headers],
                )
                for row in rows
            ]
            await asyncio.gather(*futures)
            await session.execute(
                update(table)
                .where(table.c.id.in_([row.id for row in rows]))
                .values(sent_at=self._clock.now())
            )
        self.published += len(rows)
        return len(rows)

    async def sample_backlog(self) -> Backlog:
        """Count the unsent rows now (the metrics read the last sample)."""
        async with self._sessionmaker() as session:
            self.backlog = await outbox_backlog(session, self._tables)
        self._backlog_sampled_at = time.monotonic()
        return self.backlog

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; broker or database outages are retried with backoff."""
        backoff = self._poll_interval_s
        while not stop.is_set():
            try:
                sampled = self._backlog_sampled_at
                # At most one count per interval, not per poll (polls are 50 ms apart).
                if sampled is None or time.monotonic() - sampled >= self._backlog_interval_s:
                    await self.sample_backlog()
                published = await self.publish_batch()
                self.last_error = None
                backoff = self._poll_interval_s
            except Exception as exc:  # a broker or database outage must not kill the relay
                self.last_error = repr(exc)
                log.warning("outbox relay failed, retrying in %.2fs: %r", backoff, exc)
                published = 0
                backoff = min(backoff * 2 if backoff else 0.1, 5.0)
            if published < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)


async def outbox_backlog(session: AsyncSession, tables: PlatformTables) -> Backlog:
    """Unsent rows and the creation time of the oldest one (for metrics and health)."""
    table = tables.outbox
    row = (
        await session.execute(
            select(func.count(), func.min(table.c.created_at)).where(table.c.sent_at.is_(None))
        )
    ).one()
    return Backlog(int(row[0]), row[1])


async def purge_sent(session: AsyncSession, tables: PlatformTables, before: datetime) -> int:
    """Delete rows sent before `before`; returns how many went."""
    table = tables.outbox
    result = await session.execute(
        delete(table).where(table.c.sent_at.is_not(None), table.c.sent_at < before)
    )
    return int(getattr(result, "rowcount", 0) or 0)
