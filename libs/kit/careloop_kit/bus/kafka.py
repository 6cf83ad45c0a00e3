"""Kafka client settings that keep the delivery guarantees (never aiokafka's defaults)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from careloop_contracts import TopicSpec, topic_catalogue
from careloop_kit.settings import KAFKA_HEARTBEAT_INTERVAL_MS, KitSettings


def kafka_security(settings: KitSettings) -> dict[str, Any]:
    """Connection options every Kafka client of a service uses (TLS when configured)."""
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
        **kafka_security(settings),
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
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=KAFKA_HEARTBEAT_INTERVAL_MS,
        **kafka_security(settings),
    )


@contextlib.asynccontextmanager
async def admin_client(settings: KitSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client of the service's cluster, closed on the way out."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **kafka_security(settings)
    )
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


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
    catalogue = topic_catalogue()
    async with admin_client(settings) as admin:
        existing = set(await admin.list_topics())
        wanted = []
        for name in dict.fromkeys(names):
            if name in existing:
                continue
            spec = catalogue.get(_logical(settings, name))
            wanted.append(_new_topic(settings, name, spec))
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)


def _new_topic(settings: KitSettings, name: str, spec: TopicSpec | None) -> NewTopic:
    return NewTopic(
        name=name,
        num_partitions=spec.partitions if spec else 3,
        replication_factor=settings.kafka_replication_factor,
        topic_configs=spec.config() if spec else {},
    )


@dataclass
class TopicReport:
    """What `apply_topic_catalogue` found and did, by physical topic name."""

    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    differing: dict[str, str] = field(default_factory=dict)
    """Existing topics whose partition count differs from the catalogue: Kafka can only
    add partitions, and adding them moves keys between partitions, so that stays an
    operator's decision."""


async def apply_topic_catalogue(settings: KitSettings) -> TopicReport:
    """Create every catalogue topic that is missing (service streams and dead-letter topics)
    and report the existing ones whose partition count differs from the catalogue."""
    catalogue = {topic_name(settings, name): spec for name, spec in topic_catalogue().items()}
    report = TopicReport()
    async with admin_client(settings) as admin:
        existing = set(await admin.list_topics())
        missing = [name for name in catalogue if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [_new_topic(settings, name, catalogue[name]) for name in missing]
                )
        report.created = missing
        present = [name for name in catalogue if name in existing]
        for name, actual in (await _partition_counts(admin, present)).items():
            wanted = catalogue[name].partitions
            if actual == wanted:
                report.unchanged.append(name)
            else:
                report.differing[name] = f"{actual} partitions, catalogue says {wanted}"
    return report


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    """Partitions per topic. A topic created a moment ago may be described with none yet
    while the brokers' metadata catches up, so those are asked again for a few seconds."""
    counts: dict[str, int] = {}
    pending = list(names)
    for _ in range(50):
        if not pending:
            break
        described = {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(pending)}
        counts |= described
        pending = [name for name in pending if not described.get(name)]
        if pending:
            await asyncio.sleep(0.1)
    return counts
