"""Idempotent event consumers with bounded retries and a dead-letter topic per group.

Each record is applied inside a database transaction that also records its
event id in the inbox; a redelivered event finds its id there and is skipped.
Offsets are committed to Kafka only after the database commit, so a crash at
any point either replays the record (a no-op thanks to the inbox) or has
already recorded it. A record that cannot be parsed, or whose handler keeps
failing, is published to `careloop.dlq.<group>` with its original headers and
the error, and the partition moves on.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.metrics import Counter
from pydantic import ValidationError
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careloop_contracts import (
    Envelope,
    EnvelopeError,
    Event,
    UnknownEventType,
    dead_letter_topic,
    from_headers,
    parse,
)
from careloop_kit.clock import Clock, SystemClock
from careloop_kit.db.tables import PlatformTables

log = logging.getLogger(__name__)
tracer = trace.get_tracer("careloop.bus")

Handler = Callable[[AsyncSession, Envelope, Event], Awaitable[None]]


Prepare = Callable[[Sequence[tuple[Envelope, Event]]], Awaitable[None]]


@dataclass(frozen=True)
class Prepared:
    """A handler with a batch step that runs before the batch transaction opens.

    For each batch the consumer calls every distinct `prepare` once, outside any
    transaction, with the events of the handlers that share it, then applies the
    batch as usual: slow I/O (a read from another service) is done concurrently for
    the whole batch instead of one event at a time while a pooled connection and row
    locks are held. The one-by-one replay of a failed batch runs after the same
    `prepare`. It is an optimisation only: a failing `prepare` is logged and ignored,
    so `handle` must still work on its own (fetching what `prepare` did not leave).
    """

    handle: Handler
    prepare: Prepare

    async def __call__(self, session: AsyncSession, envelope: Envelope, event: Event) -> None:
        await self.handle(session, envelope, event)


DLQ_ERROR = "x-careloop-dlq-error"
DLQ_REASON = "x-careloop-dlq-reason"
DLQ_ORIGINAL_TOPIC = "x-careloop-dlq-original-topic"
DLQ_ORIGINAL_PARTITION = "x-careloop-dlq-original-partition"
DLQ_ORIGINAL_OFFSET = "x-careloop-dlq-original-offset"
DLQ_GROUP = "x-careloop-dlq-group"
DLQ_FAILED_AT = "x-careloop-dlq-failed-at"
DLQ_HEADERS = (
    DLQ_ERROR,
    DLQ_REASON,
    DLQ_ORIGINAL_TOPIC,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_OFFSET,
    DLQ_GROUP,
    DLQ_FAILED_AT,
)


class PoisonEvent(Exception):
    """The record can never be applied (malformed, unknown type): retrying is pointless."""


@dataclass
class ConsumerStats:
    applied: int = 0
    duplicates: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    retries: int = 0
    last_error: str | None = None


class EventConsumer:
    """Consumes Careloop topics for one consumer group, exactly-once in effect."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        dlq_producer: AIOKafkaProducer,
        sessionmaker: async_sessionmaker[AsyncSession],
        tables: PlatformTables,
        *,
        group_id: str,
        handlers: Mapping[str, Handler],
        dlq_topic: str | None = None,
        max_retries: int = 3,
        retry_backoff_s: float = 0.2,
        clock: Clock | None = None,
        dead_letters: Counter | None = None,
    ) -> None:
        """`dead_letters` counts each record sent to the dead-letter topic (by group and
        reason), on the service's own meter."""
        self._consumer = consumer
        self._dlq_producer = dlq_producer
        self._sessionmaker = sessionmaker
        self._inbox = tables.inbox
        self.group_id = group_id
        self._handlers = dict(handlers)
        self.dlq_topic = dlq_topic or dead_letter_topic(group_id)
        self._max_retries = max_retries
        self._retry_backoff_s = retry_backoff_s
        self._clock = clock or SystemClock()
        self.stats = ConsumerStats()
        self._dead_letters = dead_letters
        self.lag: dict[tuple[str, int], int] = {}
        """Records after the committed offset, by (topic, partition), as last measured."""

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set."""
        while not stop.is_set():
            batches = await self._consumer.getmany(timeout_ms=200, max_records=500)
            if not batches:
                continue
            # Every partition's records in one pass (one commit), each partition in order.
            await self._process_batch([r for records in batches.values() for r in records])
            # Only after the effects are committed (or dead-lettered) does Kafka learn
            # that these records are done.
            await self._consumer.commit(
                {partition: records[-1].offset + 1 for partition, records in batches.items()}
            )

    async def measure_lag(self) -> dict[tuple[str, int], int]:
        """Compare the group's committed offset with the end of each assigned partition.

        Run beside `run` (not inside it), so a consumer stuck in a slow handler still
        shows its lag growing. A partition the group never committed on counts from its
        beginning, where `auto_offset_reset="earliest"` would start it.
        """
        partitions = sorted(self._consumer.assignment())
        if not partitions:
            self.lag = {}
            return self.lag
        ends = await self._consumer.end_offsets(partitions)
        starts: dict[TopicPartition, int] = {}
        lag: dict[tuple[str, int], int] = {}
        for tp in partitions:
            committed = await self._consumer.committed(tp)
            if committed is None:
                if not starts:
                    starts = await self._consumer.beginning_offsets(partitions)
                committed = starts[tp]
            lag[(tp.topic, tp.partition)] = max(0, ends[tp] - committed)
        self.lag = lag
        return lag

    async def _process_batch(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Apply records in order (per partition), normally in one transaction.

        The fast path records every event id in the inbox with one statement and runs
        the handlers of the new ones in a single transaction: one commit per batch
        instead of per event. If anything in the batch is poison or fails, that
        transaction rolls back and the batch is replayed one event at a time (each
        with its own transaction, retries and dead-lettering), in order.
        """
        decoded: list[tuple[Envelope, Event]] = []
        poison = False
        for record in records:
            try:
                decoded.append(self._decode(record))
            except PoisonEvent:
                poison = True
        # Before either path: the one-by-one replay uses what was prepared too.
        await self._prepare(decoded)
        if decoded and not poison:
            try:
                applied, duplicates, skipped = await self._apply_all(decoded)
            except Exception as exc:
                log.info("batch of %d fell back to one-by-one: %r", len(records), exc)
            else:
                self.stats.applied += applied
                self.stats.duplicates += duplicates
                self.stats.skipped += skipped
                return
        for record in records:
            await self._process(record)

    async def _prepare(self, decoded: list[tuple[Envelope, Event]]) -> None:
        """Let preparing handlers fetch what the batch needs before its transaction opens
        (a remote read inside it would hold a pooled connection and row locks)."""
        groups: dict[Prepare, list[tuple[Envelope, Event]]] = {}
        for envelope, event in decoded:
            handler = self._handlers.get(envelope.type)
            if isinstance(handler, Prepared):
                groups.setdefault(handler.prepare, []).append((envelope, event))
        for prepare, events in groups.items():
            try:
                await prepare(events)
            except Exception as exc:
                log.warning("preparing a batch of %d failed, handlers go on: %r", len(events), exc)

    async def _apply_all(self, decoded: list[tuple[Envelope, Event]]) -> tuple[int, int, int]:
        wanted = [(env, event) for env, event in decoded if env.type in self._handlers]
        skipped = len(decoded) - len(wanted)
        if not wanted:
            return 0, 0, skipped
        now = self._clock.now()
        async with self._sessionmaker() as session, session.begin():
            fresh = set(
                await session.scalars(
                    insert(self._inbox)
                    .values(
                        [
                            {
                                "consumer_group": self.group_id,
                                "event_id": env.id,
                                "event_type": env.type,
                                "processed_at": now,
                            }
                            for env, _ in wanted
                        ]
                    )
                    .on_conflict_do_nothing()
                    .returning(self._inbox.c.event_id)
                )
            )
            applied = 0
            for env, event in wanted:
                # An id repeated within the batch is applied once.
                if env.id not in fresh:
                    continue
                fresh.discard(env.id)
                await self._run_handler(session, env, event, self._handlers[env.type])
                applied += 1
        return applied, len(wanted) - applied, skipped

    async def _process(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            envelope, event = self._decode(record)
        except PoisonEvent as exc:
            await self._dead_letter(record, "poison", str(exc))
            return
        handler = self._handlers.get(envelope.type)
        if handler is None:
            # A known event this group has no interest in.
            self.stats.skipped += 1
            return
        delay = self._retry_backoff_s
        for attempt in range(1, self._max_retries + 1):
            try:
                await self._apply(envelope, event, handler)
                return
            except Exception as exc:
                self.stats.last_error = repr(exc)
                if attempt == self._max_retries:
                    log.error(
                        "event %s failed %d times, dead-lettering: %r", envelope.id, attempt, exc
                    )
                    await self._dead_letter(
                        record, "retries-exhausted", "".join(traceback.format_exception(exc))
                    )
                    return
                self.stats.retries += 1
                log.warning("event %s failed (attempt %d): %r", envelope.id, attempt, exc)
                await asyncio.sleep(delay)
                delay *= 2

    def _decode(self, record: ConsumerRecord[bytes, bytes]) -> tuple[Envelope, Event]:
        try:
            envelope = from_headers(list(record.headers))
        except EnvelopeError as exc:
            raise PoisonEvent(f"invalid CloudEvents headers: {exc}") from exc
        if record.value is None:
            raise PoisonEvent("record has no value")
        try:
            event = parse(envelope.type, record.value)
        except UnknownEventType as exc:
            raise PoisonEvent(f"unknown event type {envelope.type!r}") from exc
        except ValidationError as exc:
            raise PoisonEvent(f"payload does not match {envelope.type}: {exc}") from exc
        except ValueError as exc:
            raise PoisonEvent(f"payload is not valid JSON: {exc}") from exc
        return envelope, event

    async def _apply(self, envelope: Envelope, event: Event, handler: Handler) -> None:
        async with self._sessionmaker() as session, session.begin():
            first_time = await self._apply_in(session, envelope, event, handler)
        if first_time:
            self.stats.applied += 1
        else:
            self.stats.duplicates += 1

    async def _apply_in(
        self, session: AsyncSession, envelope: Envelope, event: Event, handler: Handler
    ) -> bool:
        """Record the event in the inbox and apply it; False if it was applied before."""
        first_time = await session.scalar(
            insert(self._inbox)
            .values(
                consumer_group=self.group_id,
                event_id=envelope.id,
                event_type=envelope.type,
                processed_at=self._clock.now(),
            )
            .on_conflict_do_nothing()
            .returning(self._inbox.c.event_id)
        )
        if first_time is None:
            return False
        await self._run_handler(session, envelope, event, handler)
        return True

    async def _run_handler(
        self, session: AsyncSession, envelope: Envelope, event: Event, handler: Handler
    ) -> None:
        """Run one handler inside the trace its producer started."""
        parent = propagate.extract({"traceparent": envelope.traceparent or ""})
        token = otel_context.attach(parent)
        try:
            with tracer.start_as_current_span(
                f"consume {envelope.type}",
                kind=trace.SpanKind.CONSUMER,
                attributes={"messaging.system": "kafka", "messaging.message.id": envelope.id},
            ):
                await handler(session, envelope, event)
        finally:
            otel_context.detach(token)

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], reason: str, error: str
    ) -> None:
        headers: list[tuple[str, bytes]] = [
            (k, v) for k, v in record.headers if k not in DLQ_HEADERS
        ]
        extra: dict[str, Any] = {
            DLQ_REASON: reason,
            DLQ_ERROR: error[-4000:],
            DLQ_ORIGINAL_TOPIC: record.topic,
            DLQ_ORIGINAL_PARTITION: str(record.partition),
            DLQ_ORIGINAL_OFFSET: str(record.offset),
            DLQ_GROUP: self.group_id,
            DLQ_FAILED_AT: self._clock.now().isoformat(),
        }
        headers.extend((k, str(v).encode()) for k, v in extra.items())
        # Waiting for the broker's ack before the offset commit is what makes the DLQ lossless.
        await self._dlq_producer.send_and_wait(
            self.dlq_topic, value=record.value, key=record.key, headers=headers
        )
        self.stats.dead_lettered += 1
        if self._dead_letters is not None:
            self._dead_letters.add(1, {"consumer_group": self.group_id, "reason": reason})
