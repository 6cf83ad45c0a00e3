"""messaging's key table for the kit's field-encryption port

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 02:10:00.000000

Addresses and inbox items written before (under a key derived from the KV secret
`careloop/messaging/recipient-key`) stay readable through the port's legacy keys until
`careloop keys rewrap messaging` has moved them onto data keys (it needs Vault, which a
schema migration does not reach).
"""

from careloop_kit.fields import create_field_key_table_v1, drop_field_key_table_v1

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_field_key_table_v1()


def downgrade() -> None:
    drop_field_key_table_v1()
