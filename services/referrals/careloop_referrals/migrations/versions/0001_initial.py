"""directory, referrals and their transitions, field keys, outbox, inbox, timers

Revision ID: 0001
Revises:
Create Date: 2026-12-07 13:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from careloop_kit.db.platform_schema import create_platform_tables_v1, drop_platform_tables_v1
from careloop_kit.fields import create_field_key_table_v1, drop_field_key_table_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_platform_tables_v1()
    create_field_key_table_v1()
    op.create_table(
        "directory_entry",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("npi", sa.String(length=10), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("specialty", sa.String(length=100), nullable=True),
        sa.Column("contact", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("preferred_channel", sa.String(length=16), nullable=False),
        sa.Column("internal", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_directory_entry")),
        sa.UniqueConstraint("org_id", "npi", name="uq_directory_entry_npi"),
    )
    op.create_table(
        "referral",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("urgency", sa.String(length=16), nullable=False),
        sa.Column("referring_provider_id", sa.String(length=64), nullable=False),
        sa.Column("receiving_provider_id", sa.String(length=64), nullable=True),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("stage_entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("appointment_id", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("reason_ct", sa.LargeBinary(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["referring_provider_id"],
            ["directory_entry.id"],
            name=op.f("fk_referral_referring_provider_id_directory_entry"),
        ),
        sa.ForeignKeyConstraint(
            ["receiving_provider_id"],
            ["directory_entry.id"],
            name=op.f("fk_referral_receiving_provider_id_directory_entry"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referral")),
    )
    op.create_index(
        "ix_referral_location_stage", "referral", ["org_id", "location_id", "stage"], unique=False
    )
    op.create_index("ix_referral_patient", "referral", ["org_id", "patient_id"], unique=False)
    op.create_index(
        "ix_referral_appointment", "referral", ["org_id", "appointment_id"], unique=False
    )
    op.create_table(
        "referral_transition",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("referral_id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("from_stage", sa.String(length=32), nullable=True),
        sa.Column("to_stage", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason_ct", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["referral_id"],
            ["referral.id"],
            name=op.f("fk_referral_transition_referral_id_referral"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_referral_transition")),
        sa.UniqueConstraint("seq", name=op.f("uq_referral_transition_seq")),
    )
    op.create_index(
        "ix_referral_transition_referral", "referral_transition", ["referral_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_referral_transition_referral", table_name="referral_transition")
    op.drop_table("referral_transition")
    op.drop_index("ix_referral_appointment", table_name="referral")
    op.drop_index("ix_referral_patient", table_name="referral")
    op.drop_index("ix_referral_location_stage", table_name="referral")
    op.drop_table("referral")
    op.drop_table("directory_entry")
    drop_field_key_table_v1()
    drop_platform_tables_v1()
