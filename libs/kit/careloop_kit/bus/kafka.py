"""Kafka client settings that keep the delivery guarantees (never aiokafka's defaults)."""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from careloop_contracts import TOPICS
from careloop_kit.settings import KitSettings


def _security(settings: KitSettings) -> dict[str, Any]:
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol != "PLAINTEXT":
        options["ssl_context"] = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    return options


def make_producer(settings: KitSettings, *, client_id: str) -> AIOKafkaProducer:
    """An idempotent producer that waits for every in-sync replica (acks=all)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        request_timeout_ms=30_000,
        **_security(settings),
    )


def make_consumer(
    settings: KitSettings, *topics: str, group_id: str, client_id: str
) -> AIOKafkaConsumer:
    """A consumer that commits offsets only after the effect is committed to the database."""
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=500,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        **_security(settings),
    )


def topic_name(settings: KitSettings, name: str) -> str:
    """The physical topic for a logical Careloop topic name (applies the prefix)."""
    return f"{settings.topic_prefix}{name}"


def _logical(settings: KitSettings, name: str) -> str:
    return name.removeprefix(settings.topic_prefix)


async def ensure_topics(settings: KitSettings, names: list[str]) -> None:
    """Create missing topics with the partitions and retention from the topic catalogue.

    Consumers must not subscribe to a topic that does not exist yet: they would
    only notice it at the next metadata refresh, minutes later.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **_security(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = []
        for name in dict.fromkeys(names):
            if name in existing:
                continue
            spec = TOPICS.get(_logical(settings, name))
            config = spec.config() if spec else {}
            wanted.append(
                NewTopic(
                    name=name,
                    num_partitions=spec.partitions if spec else 3,
                    replication_factor=settings.kafka_replication_factor,
                    topic_configs=config,
                )
            )
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
    finally:
        await admin.close()
