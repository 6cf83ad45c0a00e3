"""Initial gateway schema: idempotency records and platform tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 19:09:49.052071
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
    op.create_table(
        "idempotency_record",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("principal_key", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("headers", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_record")),
        sa.UniqueConstraint("principal_key", "key", name="uq_idempotency_record_principal_key_key"),
    )
    op.create_index(
        "ix_idempotency_record_created_at", "idempotency_record", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_idempotency_record_created_at", table_name="idempotency_record")
    op.drop_table("idempotency_record")
    drop_platform_tables_v1()
