"""messages, opt-outs, outbox, inbox, timers

Revision ID: 0001
Revises:
Create Date: 2026-11-26 22:05:00.000000
"""

import sqlalchemy as sa
from alembic import op

from careloop_kit.db.platform_schema import create_platform_tables_v1, drop_platform_tables_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_platform_tables_v1()
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
    drop_platform_tables_v1()
