"""messages, opt-outs, outbox, inbox, timers

Revision ID: 0001
Revises:
Create Date: 2026-11-26 22:05:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
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
        postgresql_where=sa.text("fired_at IS NULL AND cancelled_at IS NULL"),
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
        postgresql_where=sa.text("sent_at IS NULL"),
    )
    op.create_table(
        "message",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=128), nullable=False),
        sa.Column("appointment_id", sa.String(length=128), nullable=True),
        sa.Column("location_id", sa.String(length=128), nullable=True),
        sa.Column("touch_key", sa.String(length=128), nullable=False),
        sa.Column("touch", sa.String(length=40), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("skip_reason", sa.String(length=40), nullable=True),
        sa.Column("provider_id", sa.String(length=200), nullable=True),
        sa.Column("recipient_ct", sa.LargeBinary(), nullable=True),
        sa.Column("recipient_index", sa.String(length=64), nullable=True),
        sa.Column("recipient_lookup", sa.String(length=64), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("practice_name", sa.String(length=200), nullable=False),
        sa.Column("sensitive_location", sa.Boolean(), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("link_token", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message")),
        sa.UniqueConstraint("provider_id", name=op.f("uq_message_provider_id")),
        sa.UniqueConstraint("touch_key", name=op.f("uq_message_touch_key")),
    )
    op.create_index(
        "ix_message_due",
        "message",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index(
        op.f("ix_message_recipient_lookup"), "message", ["recipient_lookup"], unique=False
    )
    op.create_index(
        "ix_message_patient_created",
        "message",
        ["org_id", "patient_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "opt_out",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("recipient_index", sa.String(length=64), nullable=False),
        sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_opt_out")),
        sa.UniqueConstraint("org_id", "channel", "recipient_index", name="uq_opt_out_recipient"),
    )


def downgrade() -> None:
    op.drop_table("opt_out")
    op.drop_index("ix_message_patient_created", table_name="message")
    op.drop_index(op.f("ix_message_recipient_lookup"), table_name="message")
    op.drop_index(
        "ix_message_due", table_name="message", postgresql_where=sa.text("status = 'queued'")
    )
    op.drop_table("message")
    op.drop_index(
        "ix_outbox_message_unsent",
        table_name="outbox_message",
        postgresql_where=sa.text("sent_at IS NULL"),
    )
    op.drop_table("outbox_message")
    op.drop_table("inbox_message")
    op.drop_index(
        "ix_durable_timer_due",
        table_name="durable_timer",
        postgresql_where=sa.text("fired_at IS NULL AND cancelled_at IS NULL"),
    )
    op.drop_table("durable_timer")
