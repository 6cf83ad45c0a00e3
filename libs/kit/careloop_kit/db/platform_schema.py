"""The platform tables (durable timers, inbox, outbox) as migration steps, by version.

Every service's first migration creates the same three tables the kit's tables module
declares. The steps live here once instead of in six migrations; each version is frozen
once released, because a migration must create the same schema whenever it runs. A change
to these tables is a new function (`create_platform_tables_v2`) that later migrations call,
never an edit of an older one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

_PENDING_TIMER = sa.text("fired_at IS NULL AND cancelled_at IS NULL")
_UNSENT = sa.text("sent_at IS NULL")


def create_platform_tables_v1() -> None:
    """Create `durable_timer`, `inbox_message` and `outbox_message` as first released."""
    op.create_table(
        "durable_timer",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=100), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("dedup_key", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_durable_timer")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_durable_timer_dedup_key")),
    )
    op.create_index(
        "ix_durable_timer_due",
        "durable_timer",
        ["due_at"],
        unique=False,
        postgresql_where=_PENDING_TIMER,
    )
    op.create_table(
        "inbox_message",
        sa.Column("consumer_group", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=200), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer_group", "event_id", name="pk_inbox_message"),
    )
    op.create_table(
        "outbox_message",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=200), nullable=False),
        sa.Column("topic", sa.String(length=249), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=True),
        sa.Column("headers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_message")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_message_event_id")),
    )
    op.create_index(
        "ix_outbox_message_unsent",
        "outbox_message",
        ["id"],
        unique=False,
        postgresql_where=_UNSENT,
    )


def drop_platform_tables_v1() -> None:
    """Drop what `create_platform_tables_v1` created."""
    op.drop_index("ix_outbox_message_unsent", table_name="outbox_message", postgresql_where=_UNSENT)
    op.drop_table("outbox_message")
    op.drop_table("inbox_message")
    op.drop_index(
        "ix_durable_timer_due", table_name="durable_timer", postgresql_where=_PENDING_TIMER
    )
    op.drop_table("durable_timer")
