"""reminder settings per level; location display name and sensitivity

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 22:10:00

Reminder timers themselves live in `durable_timer` (migration 0001).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("location", sa.Column("display_name", sa.String(length=200), nullable=True))
    op.add_column(
        "location",
        sa.Column("sensitive", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_table(
        "reminder_setting",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("level", sa.String(length=32), nullable=False),
        sa.Column("scope_id", sa.String(length=64), nullable=False),
        sa.Column("send_time", sa.Time(), nullable=True),
        sa.Column("min_spacing_minutes", sa.Integer(), nullable=True),
        sa.Column("quiet_start", sa.Time(), nullable=True),
        sa.Column("quiet_end", sa.Time(), nullable=True),
        sa.Column("touches", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "level", "scope_id", name=op.f("pk_reminder_setting")),
    )
    # The worker and the cancel path look up an appointment's pending reminder timers
    # by key prefix ("<appointment_id>:"); text_pattern_ops makes that an index scan.
    op.create_index(
        "ix_durable_timer_dedup_key_prefix",
        "durable_timer",
        [sa.text("dedup_key text_pattern_ops")],
        postgresql_where=sa.text("fired_at IS NULL AND cancelled_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_durable_timer_dedup_key_prefix", table_name="durable_timer")
    op.drop_table("reminder_setting")
    op.drop_column("location", "sensitive")
    op.drop_column("location", "display_name")
