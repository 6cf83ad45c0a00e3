"""when each message was accepted by the provider: the order replies are matched in

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 01:15:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("message", sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
    # Before this column a message's last change was the best guess of when it went out.
    op.execute("UPDATE message SET sent_at = updated_at WHERE status IN ('sent', 'delivered')")


def downgrade() -> None:
    op.drop_column("message", "sent_at")
