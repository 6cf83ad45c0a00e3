"""prior authorization of referrals and the visits counted against it

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 16:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "referral_authorization",
        sa.Column("referral_id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("payer", sa.String(length=200), nullable=False),
        sa.Column("number_ct", sa.LargeBinary(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("approved_visits", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("visits_used", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["referral_id"],
            ["referral.id"],
            name=op.f("fk_referral_authorization_referral_id_referral"),
        ),
        sa.PrimaryKeyConstraint("referral_id", name=op.f("pk_referral_authorization")),
    )
    op.create_table(
        "authorization_visit",
        sa.Column("referral_id", sa.String(length=64), nullable=False),
        sa.Column("appointment_id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("counted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["referral_id"],
            ["referral.id"],
            name=op.f("fk_authorization_visit_referral_id_referral"),
        ),
        sa.PrimaryKeyConstraint(
            "referral_id", "appointment_id", name=op.f("pk_authorization_visit")
        ),
    )


def downgrade() -> None:
    op.drop_table("authorization_visit")
    op.drop_table("referral_authorization")
