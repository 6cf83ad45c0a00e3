"""outreach campaigns, their per-patient outreach, and the location view's name and zone

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-08 03:40:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("location_view", sa.Column("name", sa.String(length=200), nullable=True))
    op.add_column("location_view", sa.Column("time_zone", sa.String(length=64), nullable=True))
    op.create_table(
        "campaign",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("measure_ids", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("steps", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("launched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("launched_by", sa.String(length=200), nullable=True),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign")),
    )
    op.create_index("ix_campaign_org", "campaign", ["org_id", "created_at"])
    op.create_table(
        "campaign_outreach",
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("respond_by", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "patient_id", name="pk_campaign_outreach"),
    )
    op.create_index(
        "ix_campaign_outreach_patient", "campaign_outreach", ["org_id", "patient_id", "status"]
    )


def downgrade() -> None:
    op.drop_index("ix_campaign_outreach_patient", table_name="campaign_outreach")
    op.drop_table("campaign_outreach")
    op.drop_index("ix_campaign_org", table_name="campaign")
    op.drop_table("campaign")
    op.drop_column("location_view", "time_zone")
    op.drop_column("location_view", "name")
