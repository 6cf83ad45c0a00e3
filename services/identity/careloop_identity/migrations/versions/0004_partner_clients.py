"""partner API clients (OAuth 2.0 client credentials)

Revision ID: 0004_partner_clients
Revises: 0003_service_assertions
Create Date: 2026-11-27 12:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004_partner_clients"
down_revision = "0003_service_assertions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partner_client",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("secret_version", sa.Integer(), nullable=False),
        sa.Column("scopes", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("locations", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("rate_limit_per_minute", sa.Integer(), nullable=False),
        sa.Column("baa_signed_on", sa.Date(), nullable=True),
        sa.Column("baa_expires_on", sa.Date(), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "rate_limit_per_minute BETWEEN 1 AND 1000000",
            name="ck_partner_client_rate_limit_per_minute",
        ),
        sa.CheckConstraint(
            "baa_expires_on IS NULL OR (baa_signed_on IS NOT NULL AND baa_expires_on > baa_signed_on)",
            name="ck_partner_client_baa_dates",
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_partner_client_org_id_organization")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partner_client")),
    )
    op.create_index(op.f("ix_partner_client_org_id"), "partner_client", ["org_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_partner_client_org_id"), table_name="partner_client")
    op.drop_table("partner_client")
