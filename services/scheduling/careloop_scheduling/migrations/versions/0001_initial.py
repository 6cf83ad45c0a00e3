"""locations, providers, appointment types, availability, appointments, outbox, inbox, timers

Revision ID: 0001
Revises:
Create Date: 2026-11-26 21:50:00

Double booking is refused by the database itself: an exclusion constraint (btree_gist)
forbids two active appointments of one provider whose time ranges overlap, so two
concurrent bookings of the last free slot cannot both commit.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from careloop_kit.db.platform_schema import create_platform_tables_v1, drop_platform_tables_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_platform_tables_v1()
    # btree_gist is a trusted extension (PostgreSQL 13+): the database owner may create it.
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    op.create_table(
        "location",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "id", name=op.f("pk_location")),
    )
    op.create_table(
        "provider",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("location_ids", postgresql.ARRAY(sa.String(length=64)), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider")),
    )
    op.create_index(op.f("ix_provider_org_id"), "provider", ["org_id"], unique=False)
    op.create_table(
        "appointment_type",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("visit_category", sa.String(length=32), nullable=False),
        sa.Column("patient_kind", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appointment_type")),
    )
    op.create_index(
        op.f("ix_appointment_type_org_id"), "appointment_type", ["org_id"], unique=False
    )
    op.create_table(
        "availability",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("weekday", sa.Integer(), nullable=False),
        sa.Column("start_time", sa.Time(), nullable=False),
        sa.Column("end_time", sa.Time(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["provider.id"], name=op.f("fk_availability_provider_id_provider")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_availability")),
    )
    op.create_index(
        "ix_availability_provider", "availability", ["org_id", "provider_id"], unique=False
    )
    op.create_table(
        "availability_exception",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=True),
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.Column("last_day", sa.Date(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["provider.id"],
            name=op.f("fk_availability_exception_provider_id_provider"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_availability_exception")),
    )
    op.create_index(
        "ix_availability_exception_provider",
        "availability_exception",
        ["org_id", "provider_id"],
        unique=False,
    )
    op.create_table(
        "appointment",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("appointment_type_id", sa.String(length=64), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("confirmation", sa.String(length=16), nullable=False),
        sa.Column("rescheduled_from_id", sa.String(length=64), nullable=True),
        sa.Column("rescheduled_to_id", sa.String(length=64), nullable=True),
        sa.Column("cancel_reason", sa.String(length=200), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["appointment_type_id"],
            ["appointment_type.id"],
            name=op.f("fk_appointment_appointment_type_id_appointment_type"),
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["provider.id"], name=op.f("fk_appointment_provider_id_provider")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appointment")),
    )
    op.create_index("ix_appointment_patient", "appointment", ["org_id", "patient_id"])
    op.create_index("ix_appointment_provider_start", "appointment", ["provider_id", "start_at"])
    op.execute(
        "ALTER TABLE appointment ADD CONSTRAINT ex_appointment_no_double_booking "
        "EXCLUDE USING gist (provider_id WITH =, tstzrange(start_at, end_at) WITH &&) "
        "WHERE (status IN ('proposed', 'booked', 'arrived'))"
    )


def downgrade() -> None:
    op.drop_table("appointment")
    op.drop_table("availability_exception")
    op.drop_table("availability")
    op.drop_table("appointment_type")
    op.drop_table("provider")
    op.drop_table("location")
    drop_platform_tables_v1()
