"""stage clocks set per organization and location

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 16:45:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clock_setting",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("urgency", sa.String(length=16), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("stall_after_s", sa.Integer(), nullable=False),
        sa.Column("escalate_after_s", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint(
            "org_id", "location_id", "urgency", "stage", name=op.f("pk_clock_setting")
        ),
    )


def downgrade() -> None:
    op.drop_table("clock_setting")
