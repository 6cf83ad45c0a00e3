"""Tables of the identity database. Refresh tokens are stored only as SHA-256 hashes;
TOTP secrets and break-glass reasons only as AES-256-GCM ciphertext."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Date,
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
from careloop_kit.fields import add_field_key_table

metadata = service_metadata()
platform = add_platform_tables(metadata)
field_key = add_field_key_table(metadata)

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

# Partner API clients (OAuth 2.0 client credentials). Only the SHA-256 of the secret is
# kept; `secret_version` counts rotations and names the `sid` of the client's tokens.
partner_client = Table(
    "partner_client",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), ForeignKey("organization.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("secret_version", Integer, nullable=False),
    Column("scopes", JSONB, nullable=False),
    Column("locations", JSONB, nullable=False),
    Column("rate_limit_per_minute", Integer, nullable=False),
    Column("baa_signed_on", Date, nullable=True),
    Column("baa_expires_on", Date, nullable=True),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint(
        "rate_limit_per_minute BETWEEN 1 AND 1000000",
        name="ck_partner_client_rate_limit_per_minute",
    ),
    CheckConstraint(
        "baa_expires_on IS NULL OR (baa_signed_on IS NOT NULL AND baa_expires_on > baa_signed_on)",
        name="ck_partner_client_baa_dates",
    ),
)

# Service-identity assertions already exchanged (RFC 7523 replay protection); see
# `careloop_identity.store.service_assertions`.
MAX_JTI_LENGTH = 128

service_assertion = Table(
    "service_assertion",
    metadata,
    Column("jti", String(MAX_JTI_LENGTH), primary_key=True),
    Column("service", String(64), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)
