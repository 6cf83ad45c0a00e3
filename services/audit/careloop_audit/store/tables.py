"""Tables of the audit database: the append-only, hash-chained log and its head.

Signed checkpoints are deliberately not stored here: an anchor kept in the same
database could be rewritten together with the log (they live on a Kafka topic).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    Table,
)
from sqlalchemy.dialects.postgresql import JSONB

from careloop_kit.db import add_platform_tables, service_metadata

metadata = service_metadata()
platform = add_platform_tables(metadata)

audit_record = Table(
    "audit_record",
    metadata,
    # Gapless 1..n, assigned under the head row's lock (never a sequence, which skips).
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("audit_id", String(64), nullable=False, unique=True),
    Column("event_id", String(64), nullable=False),
    Column("org_id", String(128), nullable=False),
    Column("actor_id", String(128), nullable=False),
    Column("actor_type", String(16), nullable=False),
    Column("action", String(16), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("outcome_detail", String(128), nullable=True),
    Column("patient_id", String(128), nullable=True),
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(128), nullable=True),
    Column("phi_categories", JSONB, nullable=False),
    Column("purpose_of_use", String(32), nullable=False),
    Column("source_service", String(64), nullable=False),
    Column("source_ip", String(64), nullable=True),
    Column("request_id", String(128), nullable=True),
    Column("query_fingerprint", String(256), nullable=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    # RFC 8785 canonical JSON of the columns above: exactly what the hashes cover.
    Column("canonical", LargeBinary, nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("chain_hash", LargeBinary(32), nullable=False),
)
Index(
    "ix_audit_record_org_patient_occurred",
    audit_record.c.org_id,
    audit_record.c.patient_id,
    audit_record.c.occurred_at,
)
Index(
    "ix_audit_record_org_actor_occurred",
    audit_record.c.org_id,
    audit_record.c.actor_id,
    audit_record.c.occurred_at,
)

# One row: the last seq and chain hash. Appenders lock it, so seqs are gapless and the
# chain is linear even with several consumers.
audit_chain_head = Table(
    "audit_chain_head",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_chain_hash", LargeBinary(32), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("id = 1", name="single_row"),
)
HEAD_ID = 1
