"""Tables of the gateway database: idempotency records only (no PHI is kept here
beyond stored responses, which expire with their key)."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

from careloop_kit.db import add_platform_tables, service_metadata

metadata = service_metadata()
platform = add_platform_tables(metadata)

idempotency_record = Table(
    "idempotency_record",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("principal_key", String(128), nullable=False),
    Column("key", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("headers", JSONB, nullable=True),
    Column("body", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("principal_key", "key", name="uq_idempotency_record_principal_key_key"),
)
Index("ix_idempotency_record_created_at", idempotency_record.c.created_at)
