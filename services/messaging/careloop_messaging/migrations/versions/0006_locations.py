"""inbox items know whether their location is sensitive: such items are shown only to
the staff of that location, whatever their other scopes

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 01:25:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "inbox_item",
        sa.Column("sensitive_location", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    # The message an item was delivered from carries the flag scheduling sent with it.
    op.execute(
        "UPDATE inbox_item SET sensitive_location = message.sensitive_location "
        "FROM message WHERE message.id = inbox_item.message_id"
    )


def downgrade() -> None:
    op.drop_column("inbox_item", "sensitive_location")
