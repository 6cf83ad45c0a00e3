"""secure links: no stored bearer token; the one-time use of a message's link

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 23:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The link token is now derived (message id + HMAC under a key in Vault): a stored
    # bearer token would let anyone holding a database dump act for every patient.
    op.drop_column("message", "link_token")
    # Set once, in the transaction that acts on the link (the row locked): the link is
    # spent and its page shows what was done.
    op.add_column("message", sa.Column("link_used_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("message", sa.Column("link_action", sa.String(length=16), nullable=True))
    op.add_column("message", sa.Column("link_choice", sa.Integer(), nullable=True))
    op.create_index(
        "ix_message_link_used",
        "message",
        ["org_id", "appointment_id"],
        unique=False,
        postgresql_where=sa.text("link_used_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_message_link_used",
        table_name="message",
        postgresql_where=sa.text("link_used_at IS NOT NULL"),
    )
    op.drop_column("message", "link_choice")
    op.drop_column("message", "link_action")
    op.drop_column("message", "link_used_at")
    # Old tokens cannot be recovered: rows get fresh random ones (links already sent
    # stop working, which is the safe direction).
    op.add_column("message", sa.Column("link_token", sa.String(length=64), nullable=True))
    op.execute("UPDATE message SET link_token = md5(random()::text || id) WHERE true")
    op.alter_column("message", "link_token", existing_type=sa.String(length=64), nullable=False)
