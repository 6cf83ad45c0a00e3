"""reschedule offers made to patients who replied `R`

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 22:30:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reschedule_offer",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("appointment_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("options", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["appointment_id"],
            ["appointment.id"],
            name=op.f("fk_reschedule_offer_appointment_id_appointment"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reschedule_offer")),
    )
    # A numbered reply looks up the appointment's latest offer.
    op.create_index(
        "ix_reschedule_offer_appointment",
        "reschedule_offer",
        ["org_id", "appointment_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_reschedule_offer_appointment", table_name="reschedule_offer")
    op.drop_table("reschedule_offer")
