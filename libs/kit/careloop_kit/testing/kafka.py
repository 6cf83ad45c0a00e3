"""Read topics to the end, for tests that check what reached Kafka; publish an event as
its owner's relay would; the session timeout of the consumers that crash tests kill."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from careloop_contracts import Envelope, Event, to_headers

CRASH_TEST_SESSION_TIMEOUT_MS = 4_000
"""`kafka_session_timeout_ms` of the consumers crash tests SIGKILL: their partitions move
after 4 s instead of the default 10 s, with four heartbeats (one a second) in that time.
The test broker accepts it (`careloop_kit.infra.kafka.TEST_BROKER_OVERRIDES`)."""


async def publish_event(
    producer: AIOKafkaProducer,
    topic: str,
    event: Event,
    *,
    event_id: str | None = None,
    subject: str | None = None,
) -> str:
    """Send `event` to `topic` with the CloudEvents headers and key its owner's outbox
    relay gives it, so a consumer under test cannot tell the difference; returns the
    event id (pass it again as `event_id` to redeliver the same event)."""
    envelope = Envelope(
        id=event_id or str(uuid.uuid4()),
        type=event.event_type,
        source=f"/careloop/{event.topic.removeprefix('careloop.')}",
        time=datetime.now(UTC),
        subject=subject or event.partition_key(),
        org_id=getattr(event, "org_id", None),
        location_id=getattr(event, "location_id", None),
    )
    await producer.send_and_wait(
        topic,
        value=event.to_json(),
        key=event.partition_key().encode(),
        headers=to_headers(envelope),
    )
    return envelope.id


async def read_topic(
    bootstrap: str, topic: str, *, timeout_s: float = 5.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on `topic` up to its current end offsets (no consumer group)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + timeout_s
        while partitions is None and time.monotonic() < deadline:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
            await asyncio.sleep(0.1)
        if not partitions:
            return []
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        records: list[ConsumerRecord[bytes, bytes]] = []
        remaining = {tp for tp in assigned if ends[tp] > 0}
        while remaining and time.monotonic() < deadline:
            batch = await consumer.getmany(*remaining, timeout_ms=200)
            for tp, items in batch.items():
                records.extend(items)
                if items and items[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return records
    finally:
        await consumer.stop()


async def wait_for_records(
    bootstrap: str,
    topic: str,
    predicate: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    *,
    timeout_s: float = 20.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Re-read `topic` until `predicate` holds over its records, or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    records: list[ConsumerRecord[bytes, bytes]] = []
    while time.monotonic() < deadline:
        records = await read_topic(bootstrap, topic)
        if predicate(records):
            return records
        await asyncio.sleep(0.2)
    raise AssertionError(
        f"condition not met on {topic} within {timeout_s}s ({len(records)} records)"
    )


def header(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    """One header of a record, decoded."""
    for key, value in record.headers:
        if key == name:
            return bytes(value).decode()
    return None
