"""service assertions already exchanged (replay protection of the JWT-bearer grant)

Revision ID: 0003_service_assertions
Revises: 0002
Create Date: 2026-11-27 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_service_assertions"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_assertion",
        sa.Column("jti", sa.String(length=128), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_service_assertion")),
    )
    op.create_index(
        op.f("ix_service_assertion_expires_at"),
        "service_assertion",
        ["expires_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_service_assertion_expires_at"), table_name="service_assertion")
    op.drop_table("service_assertion")
