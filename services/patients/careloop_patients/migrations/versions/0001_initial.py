"""patient record, keys, lookups, outbox, inbox, timers

Revision ID: 0001
Revises:
Create Date: 2026-11-26 18:24:10.215039
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
        "patient_key",
        sa.Column("dek_id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("kek_name", sa.String(length=100), nullable=False),
        sa.Column("wrapped", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("dek_id", name=op.f("pk_patient_key")),
    )
    op.create_table(
        "patient",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("merged_into_id", sa.String(length=64), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("dek_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("name_ct", sa.LargeBinary(), nullable=True),
        sa.Column("birth_date_ct", sa.LargeBinary(), nullable=True),
        sa.Column("sex_ct", sa.LargeBinary(), nullable=True),
        sa.Column("phones_ct", sa.LargeBinary(), nullable=True),
        sa.Column("emails_ct", sa.LargeBinary(), nullable=True),
        sa.Column("address_ct", sa.LargeBinary(), nullable=True),
        sa.Column("preferred_language_ct", sa.LargeBinary(), nullable=True),
        sa.Column("preferences_ct", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["dek_id"], ["patient_key.dek_id"], name=op.f("fk_patient_dek_id_patient_key")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient")),
    )
    op.create_index(op.f("ix_patient_org_id"), "patient", ["org_id"], unique=False)
    op.create_table(
        "patient_lookup",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("index_version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_patient_lookup_patient_id_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_lookup")),
    )
    op.create_index(
        op.f("ix_patient_lookup_patient_id"), "patient_lookup", ["patient_id"], unique=False
    )
    op.create_index(
        "ix_patient_lookup_token", "patient_lookup", ["org_id", "kind", "token"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_patient_lookup_token", table_name="patient_lookup")
    op.drop_index(op.f("ix_patient_lookup_patient_id"), table_name="patient_lookup")
    op.drop_table("patient_lookup")
    op.drop_index(op.f("ix_patient_org_id"), table_name="patient")
    op.drop_table("patient")
    op.drop_table("patient_key")
    drop_platform_tables_v1()
