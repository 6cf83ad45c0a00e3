"""Tables every service owns in its own database: outbox, inbox and durable timers.

They are added to the service's own metadata, so the service's Alembic history
creates them alongside its business tables.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def service_metadata() -> MetaData:
    """A service's metadata, with the constraint names every Careloop database uses."""
    return MetaData(naming_convention=NAMING_CONVENTION)


@dataclass(frozen=True)
class PlatformTables:
    outbox: Table
    inbox: Table
    timer: Table


def add_platform_tables(metadata: MetaData) -> PlatformTables:
    """Declare the outbox, inbox and timer tables on a service's metadata."""
    outbox = Table(
        "outbox_message",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False, unique=True),
        Column("event_type", String(200), nullable=False),
        Column("topic", String(249), nullable=False),
        Column("key", String(200), nullable=True),
        Column("headers", JSONB, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("sent_at", DateTime(timezone=True), nullable=True),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("last_error", Text, nullable=True),
    )
    # The relay only ever scans unsent rows in id order.
    Index(
        "ix_outbox_message_unsent",
        outbox.c.id,
        postgresql_where=outbox.c.sent_at.is_(None),
    )
    inbox = Table(
        "inbox_message",
        metadata,
        Column("consumer_group", String(200), nullable=False),
        Column("event_id", String(64), nullable=False),
        Column("event_type", String(200), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("consumer_group", "event_id", name="pk_inbox_message"),
    )
    timer = Table(
        "durable_timer",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("kind", String(100), nullable=False),
        Column("due_at", DateTime(timezone=True), nullable=False),
        Column("payload", JSONB, nullable=False),
        Column("dedup_key", String(200), nullable=True, unique=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("fired_at", DateTime(timezone=True), nullable=True),
        Column("cancelled_at", DateTime(timezone=True), nullable=True),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("last_error", Text, nullable=True),
    )
    Index(
        "ix_durable_timer_due",
        timer.c.due_at,
        postgresql_where=timer.c.fired_at.is_(None) & timer.c.cancelled_at.is_(None),
    )
    return PlatformTables(outbox=outbox, inbox=inbox, timer=timer)
