"""the location view follows identity's location events: feature switches, and the
time of the event applied last so an older one never overwrites a newer one

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 01:30:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "location",
        sa.Column(
            "features",
            postgresql.JSONB(),
            nullable=False,
            server_default=sa.text("'{}'::jsonb"),
        ),
    )
    # NULL for rows set by hand before identity announced locations: the first event
    # about the location replaces them.
    op.add_column("location", sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("location", "changed_at")
    op.drop_column("location", "features")
