"""A worker program for crash tests: an outbox relay or an idempotent consumer.

Crash tests start these as subprocesses and SIGKILL them at random moments, so
the delivery guarantees are checked against real process deaths, not simulated
ones::

    python -m careloop_kit.testing.crashrig setup --db DSN
    python -m careloop_kit.testing.crashrig relay --db DSN --bootstrap B --service S [--prefix P]
    python -m careloop_kit.testing.crashrig consume --db DSN --bootstrap B --topic T --group G \
        [--prefix P] [--fail-on-marker M]

``--topic`` and ``--group`` are logical names (``careloop.patients``,
``careloop.crash.effects``); the prefix is applied to them as the services do, and
the consumer dead-letters to ``<prefix>careloop.dlq.<group>``.

The consumer applies ``careloop.patients.patient.registered.v1`` by inserting one
row into ``crash_effect``, which has no unique constraint: a duplicate effect would
be visible there. A patient id containing the fail marker makes the handler raise.

Each worker prints one ``ready`` line to stdout once it is connected, and exits
cleanly (status 0) on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, func
from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import Envelope, Event, PatientRegistered, dead_letter_topic
from careloop_kit.bus.consumer import EventConsumer, Handler
from careloop_kit.bus.kafka import ensure_topics, make_consumer, make_producer, topic_name
from careloop_kit.bus.outbox import OutboxRelay
from careloop_kit.db import add_platform_tables, make_engine, make_sessionmaker
from careloop_kit.settings import KitSettings

log = logging.getLogger("careloop.crashrig")

metadata = MetaData()
tables = add_platform_tables(metadata)
crash_effect = Table(
    "crash_effect",
    metadata,
    # Deliberately no primary key or unique constraint: duplicates must stay visible.
    Column("event_id", String(64), nullable=False),
    Column("patient_id", String(200), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Index("ix_crash_effect_event_id", crash_effect.c.event_id)

REGISTERED = PatientRegistered.event_type


class HandlerFailure(RuntimeError):
    """Raised by the rig's handler for events carrying the fail marker."""


def effect_handler(fail_marker: str | None) -> Handler:
    """The handler that records one ``crash_effect`` row per applied event."""

    async def apply(session: AsyncSession, envelope: Envelope, event: Event) -> None:
        assert isinstance(event, PatientRegistered)
        if fail_marker and fail_marker in event.patient_id:
            raise HandlerFailure(f"handler refuses patient {event.patient_id!r}")
        await session.execute(
            crash_effect.insert().values(event_id=envelope.id, patient_id=event.patient_id)
        )

    return apply


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def _ready(what: str) -> None:
    print(f"ready {what}", flush=True)


async def setup(dsn: str) -> None:
    """Create the platform tables and ``crash_effect``."""
    engine = make_engine(dsn, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
    finally:
        await engine.dispose()


async def relay(dsn: str, bootstrap: str, service: str, prefix: str, batch_size: int) -> None:
    """Run an outbox relay until SIGTERM."""
    settings = KitSettings(kafka_bootstrap=bootstrap, topic_prefix=prefix)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    engine = make_engine(dsn, pool_size=2)
    producer = make_producer(settings, client_id=f"crashrig-relay-{service}")
    await producer.start()
    try:
        await ensure_topics(settings, [topic_name(settings, f"careloop.{service}")])
        outbox_relay = OutboxRelay(
            make_sessionmaker(engine),
            tables,
            producer,
            service=service,
            batch_size=batch_size,
            poll_interval_s=settings.outbox_poll_interval_s,
        )
        _ready("relay")
        await outbox_relay.run(stop)
    finally:
        await producer.stop()
        await engine.dispose()


async def consume(
    dsn: str, bootstrap: str, topic: str, group: str, prefix: str, fail_marker: str | None
) -> None:
    """Run an idempotent consumer of ``topic`` until SIGTERM."""
    settings = KitSettings(kafka_bootstrap=bootstrap, topic_prefix=prefix)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    physical_topic = topic_name(settings, topic)
    dlq_topic = topic_name(settings, dead_letter_topic(group))
    await ensure_topics(settings, [physical_topic, dlq_topic])
    engine = make_engine(dsn, pool_size=2)
    producer = make_producer(settings, client_id="crashrig-dlq")
    kafka_consumer = make_consumer(
        settings,
        physical_topic,
        group_id=topic_name(settings, group),
        client_id="crashrig-consumer",
    )
    await producer.start()
    await kafka_consumer.start()
    try:
        consumer = EventConsumer(
            kafka_consumer,
            producer,
            make_sessionmaker(engine),
            tables,
            group_id=topic_name(settings, group),
            handlers={REGISTERED: effect_handler(fail_marker)},
            dlq_topic=dlq_topic,
            max_retries=settings.consumer_max_retries,
            retry_backoff_s=settings.consumer_retry_backoff_s,
        )
        _ready("consumer")
        await consumer.run(stop)
    finally:
        await kafka_consumer.stop()
        await producer.stop()
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m careloop_kit.testing.crashrig")
    commands = parser.add_subparsers(dest="command", required=True)

    setup_cmd = commands.add_parser("setup", help="create the rig's tables")
    setup_cmd.add_argument("--db", required=True, help="SQLAlchemy asyncpg URL")

    relay_cmd = commands.add_parser("relay", help="run the outbox relay forever")
    relay_cmd.add_argument("--db", required=True)
    relay_cmd.add_argument("--bootstrap", required=True)
    relay_cmd.add_argument("--service", required=True)
    relay_cmd.add_argument("--prefix", default="")
    relay_cmd.add_argument("--batch-size", type=int, default=500)

    consume_cmd = commands.add_parser("consume", help="run the idempotent consumer forever")
    consume_cmd.add_argument("--db", required=True)
    consume_cmd.add_argument("--bootstrap", required=True)
    consume_cmd.add_argument("--topic", required=True, help="logical topic name")
    consume_cmd.add_argument("--group", required=True, help="logical consumer group")
    consume_cmd.add_argument("--prefix", default="")
    consume_cmd.add_argument("--fail-on-marker", default=None)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "setup":
        asyncio.run(setup(args.db))
        _ready("setup")
    elif args.command == "relay":
        asyncio.run(relay(args.db, args.bootstrap, args.service, args.prefix, args.batch_size))
    else:
        asyncio.run(
            consume(
                args.db, args.bootstrap, args.topic, args.group, args.prefix, args.fail_on_marker
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
