"""care relationships: a location's reason to reach a patient's record; the
sensitivity of each location, from identity's location events

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 01:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "care_relationship",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("source_id", sa.String(length=64), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_care_relationship_patient_id_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_relationship")),
        sa.UniqueConstraint("org_id", "kind", "source_id", name="uq_care_relationship_source"),
    )
    op.create_index(
        "ix_care_relationship_open",
        "care_relationship",
        ["org_id", "patient_id", "location_id"],
        unique=False,
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_table(
        "location_view",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("sensitive", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_location_view")),
    )


def downgrade() -> None:
    op.drop_table("location_view")
    op.drop_index("ix_care_relationship_open", table_name="care_relationship")
    op.drop_table("care_relationship")
