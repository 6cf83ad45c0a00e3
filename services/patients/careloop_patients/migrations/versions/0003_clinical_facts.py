"""clinical facts: conditions, observations, procedures, immunizations, medication
statements and encounters of a patient, sealed with the patient's data key

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08 03:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clinical_facts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("dedup_token", sa.String(length=64), nullable=True),
        sa.Column("content_token", sa.String(length=64), nullable=False),
        sa.Column("index_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resource_ct", sa.LargeBinary(), nullable=False),
        sa.Column("fact_ct", sa.LargeBinary(), nullable=False),
        sa.Column("source_key_ct", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_clinical_facts_patient_id_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clinical_facts")),
    )
    op.create_index(
        "ix_clinical_facts_patient",
        "clinical_facts",
        ["org_id", "patient_id", "kind"],
        unique=False,
    )
    op.create_index(
        "uq_clinical_facts_dedup",
        "clinical_facts",
        ["org_id", "patient_id", "dedup_token"],
        unique=True,
        postgresql_where=sa.text("dedup_token IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_clinical_facts_dedup", table_name="clinical_facts")
    op.drop_index("ix_clinical_facts_patient", table_name="clinical_facts")
    op.drop_table("clinical_facts")
