"""waitlist entries, freed slots and the offers made from them

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 00:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "waitlist_entry",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("appointment_type_id", sa.String(length=64), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=True),
        sa.Column("earliest_date", sa.Date(), nullable=False),
        sa.Column("latest_date", sa.Date(), nullable=False),
        sa.Column("weekdays", postgresql.ARRAY(sa.Integer()), nullable=True),
        sa.Column("parts_of_day", postgresql.ARRAY(sa.String(length=16)), nullable=True),
        sa.Column("appointment_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("booked_appointment_id", sa.String(length=64), nullable=True),
        sa.Column("position", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["appointment_type_id"],
            ["appointment_type.id"],
            name=op.f("fk_waitlist_entry_appointment_type_id_appointment_type"),
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["provider.id"], name=op.f("fk_waitlist_entry_provider_id_provider")
        ),
        sa.ForeignKeyConstraint(
            ["appointment_id"],
            ["appointment.id"],
            name=op.f("fk_waitlist_entry_appointment_id_appointment"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_waitlist_entry")),
        sa.UniqueConstraint("position", name=op.f("uq_waitlist_entry_position")),
    )
    # A freed time is matched against one location's waiting entries of one type, in
    # waitlist order; only waiting entries are indexed.
    op.create_index(
        "ix_waitlist_entry_match",
        "waitlist_entry",
        ["org_id", "location_id", "appointment_type_id", "position"],
        postgresql_where=sa.text("status = 'waiting'"),
    )
    op.create_index("ix_waitlist_entry_patient", "waitlist_entry", ["org_id", "patient_id"])
    op.create_table(
        "waitlist_slot",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("appointment_type_id", sa.String(length=64), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_appointment_id", sa.String(length=64), nullable=False),
        sa.Column("source_patient_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("filled_by_entry_id", sa.String(length=64), nullable=True),
        sa.Column("appointment_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_waitlist_slot")),
        sa.UniqueConstraint(
            "source_appointment_id", name=op.f("uq_waitlist_slot_source_appointment_id")
        ),
    )
    op.create_table(
        "waitlist_offer",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("slot_id", sa.String(length=64), nullable=False),
        sa.Column("entry_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["slot_id"], ["waitlist_slot.id"], name=op.f("fk_waitlist_offer_slot_id_waitlist_slot")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["waitlist_entry.id"],
            name=op.f("fk_waitlist_offer_entry_id_waitlist_entry"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_waitlist_offer")),
    )
    op.create_index("ix_waitlist_offer_slot", "waitlist_offer", ["slot_id", "status"])
    op.create_index("ix_waitlist_offer_entry", "waitlist_offer", ["entry_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_waitlist_offer_entry", table_name="waitlist_offer")
    op.drop_index("ix_waitlist_offer_slot", table_name="waitlist_offer")
    op.drop_table("waitlist_offer")
    op.drop_table("waitlist_slot")
    op.drop_index("ix_waitlist_entry_patient", table_name="waitlist_entry")
    op.drop_index("ix_waitlist_entry_match", table_name="waitlist_entry")
    op.drop_table("waitlist_entry")
