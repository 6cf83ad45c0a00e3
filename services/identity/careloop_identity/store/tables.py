"""Tables of the identity database. Refresh tokens are stored only as SHA-256 hashes;
TOTP secrets and break-glass reasons only as AES-256-GCM ciphertext."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
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

organization = Table(
    "organization",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

location = Table(
    "location",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), ForeignKey("organization.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("address", JSONB, nullable=True),
    Column("time_zone", String(64), nullable=False),
    Column("sensitive", Boolean, nullable=False),
    Column("features", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

user_account = Table(
    "user_account",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), ForeignKey("organization.id"), nullable=False),
    Column("email", String(254), nullable=False),
    Column("display_name", String(200), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("roles", JSONB, nullable=False),
    Column("locations", JSONB, nullable=False),
    Column("patient_id", String(64), nullable=True),
    Column("failed_attempts", Integer, nullable=False),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("totp_secret_ct", LargeBinary, nullable=True),
    Column("totp_enabled", Boolean, nullable=False),
    Column("totp_last_step", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("org_id", "email", name="uq_user_account_org_email"),
)

login_session = Table(
    "login_session",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("user_id", String(64), ForeignKey("user_account.id"), nullable=False, index=True),
    Column("amr", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_active_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoke_reason", String(32), nullable=True),
)

refresh_token = Table(
    "refresh_token",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("session_id", String(64), ForeignKey("login_session.id"), nullable=False, index=True),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
)

break_glass_grant = Table(
    "break_glass_grant",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("user_id", String(64), ForeignKey("user_account.id"), nullable=False),
    Column("session_id", String(64), ForeignKey("login_session.id"), nullable=False, index=True),
    Column("patient_id", String(64), nullable=False),
    Column("reason_code", String(40), nullable=False),
    Column("reason_ct", LargeBinary, nullable=False),
    Column("granted_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
