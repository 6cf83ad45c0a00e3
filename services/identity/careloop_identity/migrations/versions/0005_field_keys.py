"""identity's key table for the kit's field-encryption port

Revision ID: 0005_field_keys
Revises: 0004_partner_clients
Create Date: 2026-12-07 01:45:00.000000

The ciphertexts written before (one fixed key) stay readable through the port's legacy
key until `careloop keys rewrap identity` has moved them onto data keys (it needs Vault,
which a schema migration does not reach).
"""

from careloop_kit.fields import create_field_key_table_v1, drop_field_key_table_v1

revision = "0005_field_keys"
down_revision = "0004_partner_clients"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_field_key_table_v1()


def downgrade() -> None:
    drop_field_key_table_v1()
