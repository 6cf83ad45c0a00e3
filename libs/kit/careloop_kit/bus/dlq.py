"""Operator tools for dead-letter topics: list what a consumer group gave up on, replay it.

A consumer group's dead letters live on ``careloop.dlq.<group>`` (prefixed like every
topic). Each record keeps the original key, value and headers plus the
``x-careloop-dlq-*`` headers the consumer added (reason, error, original topic,
partition and offset, group, time).

Replaying re-publishes a dead letter to its original topic with its original key,
value and headers (the ``x-careloop-dlq-*`` ones stripped) through an idempotent,
acks=all producer. Progress is remembered in the consumer group
``careloop.dlq-replay.<group>`` (prefixed), and only after the broker acknowledged
the re-publish, so each dead letter is replayed once:

- the committed offset of each dead-letter partition is its low-water mark: every
  record below it has been replayed;
- the commit metadata lists the offsets above the mark that were replayed out of
  order, which happens when ``event_ids`` selects only some dead letters. The others
  stay pending and a later replay (filtered or not) still picks them up.

A crash after the re-publish but before the commit replays those records again; the
consumers' inbox makes that harmless. A replayed event goes to the end of its
original topic, so it is applied after events of the same key published since it
failed: handlers must tolerate that, as they tolerate any redelivery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from careloop_contracts import dead_letter_topic
from careloop_kit.bus.consumer import (
    DLQ_ERROR,
    DLQ_FAILED_AT,
    DLQ_GROUP,
    DLQ_HEADERS,
    DLQ_ORIGINAL_OFFSET,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_TOPIC,
    DLQ_REASON,
)
from careloop_kit.bus.kafka import admin_client, kafka_security, make_producer, topic_name
from careloop_kit.settings import KitSettings

log = logging.getLogger(__name__)

REPLAY_GROUP_PREFIX = "careloop.dlq-replay."
_METADATA_PREFIX = "replayed:"
# Kafka refuses commit metadata above offset.metadata.max.bytes (4096 by default).
_METADATA_MAX_CHARS = 3900
_COORDINATOR_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class DeadLetter:
    """One record on a dead-letter topic."""

    topic: str
    partition: int
    offset: int
    key: str | None
    event_id: str | None
    event_type: str | None
    reason: str | None
    error: str | None
    original_topic: str | None
    original_partition: int | None
    original_offset: int | None
    group: str | None
    failed_at: datetime | None
    replayed: bool = False
    """Whether ``replay_dead_letters`` has already re-published this record."""


def replay_group(settings: KitSettings, group: str) -> str:
    """The consumer group that remembers replay progress for logical group ``group``."""
    return topic_name(settings, f"{REPLAY_GROUP_PREFIX}{group}")


@dataclass
class _Progress:
    """Replay progress of one dead-letter partition."""

    low_water: int
    """Every offset below this has been replayed."""
    above: set[int]
    """Offsets at or above ``low_water`` replayed out of order."""

    def done(self, offset: int) -> bool:
        return offset < self.low_water or offset in self.above

    def mark(self, offset: int) -> None:
        self.above.add(offset)
        while self.low_water in self.above:
            self.above.discard(self.low_water)
            self.low_water += 1

    def commit_value(self) -> OffsetAndMetadata:
        kept: list[int] = []
        length = len(_METADATA_PREFIX)
        for offset in sorted(self.above):
            length += len(str(offset)) + 1
            if length > _METADATA_MAX_CHARS:
                log.warning(
                    "too many out-of-order replays to remember; %d may be replayed again",
                    len(self.above) - len(kept),
                )
                break
            kept.append(offset)
        return OffsetAndMetadata(self.low_water, _METADATA_PREFIX + ",".join(str(o) for o in kept))

    @classmethod
    def parse(cls, committed: OffsetAndMetadata | None) -> _Progress:
        if committed is None or committed.offset < 0:
            return cls(0, set())
        above: set[int] = set()
        metadata = committed.metadata or ""
        if metadata.startswith(_METADATA_PREFIX):
            for part in metadata.removeprefix(_METADATA_PREFIX).split(","):
                if part.strip().isdigit() and int(part) >= committed.offset:
                    above.add(int(part))
        return cls(committed.offset, above)


def _header(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    for key, value in record.headers:
        if key == name:
            return bytes(value).decode("utf-8", errors="replace")
    return None


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _datetime_or_none(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _dead_letter(record: ConsumerRecord[bytes, bytes], replayed: bool) -> DeadLetter:
    return DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key.decode("utf-8", errors="replace") if record.key is not None else None,
        event_id=_header(record, "ce_id"),
        event_type=_header(record, "ce_type"),
        reason=_header(record, DLQ_REASON),
        error=_header(record, DLQ_ERROR),
        original_topic=_header(record, DLQ_ORIGINAL_TOPIC),
        original_partition=_int_or_none(_header(record, DLQ_ORIGINAL_PARTITION)),
        original_offset=_int_or_none(_header(record, DLQ_ORIGINAL_OFFSET)),
        group=_header(record, DLQ_GROUP),
        failed_at=_datetime_or_none(_header(record, DLQ_FAILED_AT)),
        replayed=replayed,
    )


async def _partitions_and_progress(
    settings: KitSettings, topic: str, group: str
) -> dict[TopicPartition, _Progress]:
    """The dead-letter partitions with their replay progress; empty when there is no topic.

    The topic is looked up in the full topic list first, so a missing one is never
    auto-created by asking for its metadata.
    """
    async with admin_client(settings) as admin:
        if topic not in await admin.list_topics():
            return {}
        described = await admin.describe_topics([topic])
        partitions = [
            TopicPartition(topic, int(p["partition"]))
            for t in described
            if t["topic"] == topic
            for p in t["partitions"]
        ]
        committed = await _committed(admin, replay_group(settings, group), partitions)
    return {tp: _Progress.parse(committed.get(tp)) for tp in sorted(partitions)}


async def _committed(
    admin: AIOKafkaAdminClient, group_id: str, partitions: list[TopicPartition]
) -> dict[TopicPartition, OffsetAndMetadata]:
    """The group's committed offsets, retrying while the coordinator is not available yet
    (on a fresh cluster the offsets topic is created on first use)."""
    deadline = time.monotonic() + _COORDINATOR_TIMEOUT_S
    while True:
        try:
            offsets: dict[
                TopicPartition, OffsetAndMetadata
            ] = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
            return offsets
        except KafkaError as exc:
            if not exc.retriable or time.monotonic() > deadline:
                raise
            log.info("offsets of %s not available yet (%r); retrying", group_id, exc)
            await asyncio.sleep(0.5)


def _reader(settings: KitSettings, *, group_id: str | None) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        client_id="careloop-dlq",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        **kafka_security(settings),
    )


async def _read_batches(
    consumer: AIOKafkaConsumer, starts: dict[TopicPartition, int]
) -> list[list[ConsumerRecord[bytes, bytes]]]:
    """Every record from ``starts`` to the current end offsets, in per-partition batches."""
    consumer.assign(list(starts))
    ends = await consumer.end_offsets(list(starts))
    for tp, start in starts.items():
        consumer.seek(tp, start)
    remaining = {tp for tp in starts if ends[tp] > starts[tp]}
    batches: list[list[ConsumerRecord[bytes, bytes]]] = []
    deadline = time.monotonic() + 60.0
    while remaining:
        if time.monotonic() > deadline:
            raise TimeoutError(f"dead-letter topic not read to its end: {sorted(remaining)}")
        fetched = await consumer.getmany(*remaining, timeout_ms=500, max_records=500)
        for tp, records in fetched.items():
            kept = [r for r in records if r.offset < ends[tp]]
            if kept:
                batches.append(kept)
            if records and records[-1].offset + 1 >= ends[tp]:
                remaining.discard(tp)
    return batches


async def list_dead_letters(settings: KitSettings, group: str) -> list[DeadLetter]:
    """Every record on the dead-letter topic of logical group ``group``, by partition and offset.

    Reads from the beginning to the current end offsets without joining a consumer
    group; ``replayed`` comes from the replay group's committed progress.
    """
    topic = topic_name(settings, dead_letter_topic(group))
    progress = await _partitions_and_progress(settings, topic, group)
    if not progress:
        return []
    consumer = _reader(settings, group_id=None)
    await consumer.start()
    try:
        batches = await _read_batches(consumer, dict.fromkeys(progress, 0))
    finally:
        await consumer.stop()
    return [
        _dead_letter(record, progress[TopicPartition(topic, record.partition)].done(record.offset))
        for batch in sorted(batches, key=lambda b: b[0].partition)
        for record in batch
    ]


async def replay_dead_letters(
    settings: KitSettings, group: str, *, event_ids: set[str] | None = None
) -> int:
    """Re-publish not-yet-replayed dead letters of ``group`` to their original topics.

    With ``event_ids``, only dead letters whose ``ce_id`` is in the set are replayed;
    the others stay pending for a later replay. Returns how many were re-published.
    Records without an original-topic header cannot be replayed and are left pending.
    """
    topic = topic_name(settings, dead_letter_topic(group))
    progress = await _partitions_and_progress(settings, topic, group)
    if not progress:
        return 0
    consumer = _reader(settings, group_id=replay_group(settings, group))
    producer = make_producer(settings, client_id="careloop-dlq-replay")
    await consumer.start()
    await producer.start()
    replayed = 0
    try:
        starts = {tp: state.low_water for tp, state in progress.items()}
        for batch in await _read_batches(consumer, starts):
            tp = TopicPartition(batch[0].topic, batch[0].partition)
            state = progress[tp]
            chosen: list[ConsumerRecord[bytes, bytes]] = []
            for record in batch:
                if state.done(record.offset):
                    continue
                if event_ids is not None and _header(record, "ce_id") not in event_ids:
                    continue
                if not _header(record, DLQ_ORIGINAL_TOPIC):
                    log.warning(
                        "dead letter %s[%d]@%d names no original topic; not replayed",
                        record.topic,
                        record.partition,
                        record.offset,
                    )
                    continue
                chosen.append(record)
            if not chosen:
                continue
            futures = [
                await producer.send(
                    _header(record, DLQ_ORIGINAL_TOPIC) or "",
                    value=record.value,
                    key=record.key,
                    headers=[(k, bytes(v)) for k, v in record.headers if k not in DLQ_HEADERS],
                )
                for record in chosen
            ]
            # Progress is committed only once the broker has acknowledged every re-publish.
            await asyncio.gather(*futures)
            for record in chosen:
                state.mark(record.offset)
            await consumer.commit({tp: state.commit_value()})
            replayed += len(chosen)
    finally:
        await producer.stop()
        await consumer.stop()
    return replayed
