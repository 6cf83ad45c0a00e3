"""reschedule offers: offered times and expiry on the message row

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 22:30:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: only offer messages carry them, and existing rows are reminders.
    op.add_column(
        "message",
        sa.Column("offer_options", postgresql.ARRAY(sa.DateTime(timezone=True)), nullable=True),
    )
    op.add_column(
        "message", sa.Column("offer_expires_at", sa.DateTime(timezone=True), nullable=True)
    )
    # An offer's touch key is its id (up to 128 characters) plus a suffix.
    op.alter_column(
        "message",
        "touch_key",
        existing_type=sa.String(length=128),
        type_=sa.String(length=200),
        existing_nullable=False,
    )


def downgrade() -> None:
    op.alter_column(
        "message",
        "touch_key",
        existing_type=sa.String(length=200),
        type_=sa.String(length=128),
        existing_nullable=False,
    )
    op.drop_column("message", "offer_expires_at")
    op.drop_column("message", "offer_options")
