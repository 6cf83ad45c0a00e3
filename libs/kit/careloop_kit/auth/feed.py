"""Every replica hears every logout: a group-less tail of `careloop.identity`.

A consumer group would split the revocations between replicas, and each keeps its
own in-memory set, so each replica reads all partitions itself, starting from the
records of the last access-token lifetime (older sessions' tokens have expired).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition

from careloop_contracts import SessionRevoked, from_headers, parse
from careloop_kit.auth.revocation import RevokedSessions
from careloop_kit.bus.kafka import kafka_security, topic_name
from careloop_kit.clock import Clock
from careloop_kit.settings import KitSettings

log = logging.getLogger(__name__)

IDENTITY_TOPIC = SessionRevoked.topic


async def follow_revocations(
    settings: KitSettings,
    revoked: RevokedSessions,
    stop: asyncio.Event,
    *,
    clock: Clock,
    lookback: timedelta,
) -> None:
    """Add every revoked session id to `revoked` until `stop` is set."""
    topic = topic_name(settings, IDENTITY_TOPIC)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        **kafka_security(settings),
    )
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic, stop)
        if not partitions:
            return
        consumer.assign(partitions)
        since_ms = int((clock.now() - lookback).timestamp() * 1000)
        offsets = await consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
        ends = await consumer.end_offsets(partitions)
        for partition in partitions:
            found = offsets.get(partition)
            consumer.seek(partition, found.offset if found else ends[partition])
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    _apply(record.headers, record.value, revoked)
    finally:
        await consumer.stop()


async def _partitions(
    consumer: AIOKafkaConsumer, topic: str, stop: asyncio.Event
) -> list[TopicPartition]:
    # Identity creates the topic when it starts; wait for it rather than miss it.
    while not stop.is_set():
        await consumer._client.force_metadata_update()
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=2)
    return []


def _apply(headers: object, value: bytes | None, revoked: RevokedSessions) -> None:
    try:
        envelope = from_headers(list(headers))  # type: ignore[call-overload]
        if envelope.type != SessionRevoked.event_type or value is None:
            return
        event = parse(envelope.type, value)
    except Exception as exc:  # an unreadable record must not stop revocations
        log.warning("skipping unreadable record on the identity topic: %r", exc)
        return
    if isinstance(event, SessionRevoked):
        revoked.revoke(event.session_id)
