"""patient profiles, clinical facts, attribution, gaps and their transitions, measure
visit types, evaluation jobs, the location view, field keys, outbox, inbox, timers

Revision ID: 0001
Revises:
Create Date: 2026-12-08 03:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

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
        "patient_profile",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("demographics_ct", sa.LargeBinary(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "patient_id", name="pk_patient_profile"),
    )
    op.create_table(
        "clinical_fact",
        sa.Column("fact_id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("fact_ct", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("fact_id", name=op.f("pk_clinical_fact")),
    )
    op.create_index("ix_clinical_fact_patient", "clinical_fact", ["org_id", "patient_id"])
    op.create_table(
        "attribution",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("appointment_id", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "patient_id", name="pk_attribution"),
    )
    op.create_index("ix_attribution_location", "attribution", ["org_id", "location_id"])
    op.create_table(
        "care_gap",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("measure_id", sa.String(length=64), nullable=False),
        sa.Column("measure_version", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=True),
        sa.Column("provider_id", sa.String(length=64), nullable=True),
        sa.Column("by_hand", sa.Boolean(), nullable=False),
        sa.Column("appointment_id", sa.String(length=64), nullable=True),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.Column("evidence_ct", sa.LargeBinary(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_gap")),
    )
    op.create_index(
        "uq_care_gap_current",
        "care_gap",
        ["org_id", "patient_id", "measure_id"],
        unique=True,
        postgresql_where=sa.text("is_current"),
    )
    op.create_index(
        "ix_care_gap_population", "care_gap", ["org_id", "measure_id", "status", "location_id"]
    )
    op.create_table(
        "gap_transition",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("gap_id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("gap_version", sa.Integer(), nullable=False),
        sa.Column("cause", sa.String(length=32), nullable=True),
        sa.Column("actor_id", sa.String(length=200), nullable=False),
        sa.Column("reason_ct", sa.LargeBinary(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_gap_transition")),
    )
    op.create_index("ix_gap_transition_gap", "gap_transition", ["org_id", "gap_id"])
    op.create_table(
        "measure_visit_type",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("measure_id", sa.String(length=64), nullable=False),
        sa.Column("appointment_type_id", sa.String(length=64), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "org_id", "measure_id", "appointment_type_id", name="pk_measure_visit_type"
        ),
    )
    op.create_table(
        "evaluation_job",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.String(length=64), nullable=True),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("error", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluation_job")),
    )
    op.create_index("ix_evaluation_job_status", "evaluation_job", ["status", "created_at"])
    op.create_table(
        "location_view",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("sensitive", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_location_view")),
    )


def downgrade() -> None:
    op.drop_table("location_view")
    op.drop_index("ix_evaluation_job_status", table_name="evaluation_job")
    op.drop_table("evaluation_job")
    op.drop_table("measure_visit_type")
    op.drop_index("ix_gap_transition_gap", table_name="gap_transition")
    op.drop_table("gap_transition")
    op.drop_index("ix_care_gap_population", table_name="care_gap")
    op.drop_index("uq_care_gap_current", table_name="care_gap")
    op.drop_table("care_gap")
    op.drop_index("ix_attribution_location", table_name="attribution")
    op.drop_table("attribution")
    op.drop_index("ix_clinical_fact_patient", table_name="clinical_fact")
    op.drop_table("clinical_fact")
    op.drop_table("patient_profile")
    drop_field_key_table_v1()
    drop_platform_tables_v1()
