"""Tables of the messaging database. Addresses are stored only encrypted (the kit's field
port, data keys in `field_key`), with a blind index for exact matching (inbound replies,
opt-outs); bodies are never stored, they are rendered again from the template when a
message is (re)sent."""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

from careloop_kit.db import add_platform_tables, service_metadata
from careloop_kit.fields import add_field_key_table

metadata = service_metadata()
platform = add_platform_tables(metadata)
# The wrapped data keys of the kit's field port, under `careloop-messaging-fields`.
field_key = add_field_key_table(metadata)

message = Table(
    "message",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("patient_id", String(128), nullable=False),
    Column("appointment_id", String(128), nullable=True),
    Column("location_id", String(128), nullable=True),
    # At most one message per reminder touch or offer, whatever redelivers the event.
    # 200: an offer's key is its id (up to 128) plus a suffix.
    Column("touch_key", String(200), nullable=False, unique=True),
    Column("touch", String(40), nullable=False),
    Column("channel", String(16), nullable=True),
    Column("status", String(16), nullable=False),
    Column("skip_reason", String(40), nullable=True),
    Column("provider_id", String(200), nullable=True, unique=True),
    Column("recipient_ct", LargeBinary, nullable=True),
    Column("recipient_index", String(64), nullable=True),
    # The same address's index across tenants: an inbound SMS names only the phone
    # number, so STOP finds every organization that messaged it through this lookup.
    Column("recipient_lookup", String(64), nullable=True, index=True),
    Column("language", String(16), nullable=False),
    # What the template needs, none of it PHI: the practice's display name, the visit
    # time and zone. The secure link is derived from the id (HMAC under a key in Vault),
    # so no bearer token is stored.
    Column("practice_name", String(200), nullable=False),
    Column("sensitive_location", Boolean, nullable=False),
    Column("start_at", DateTime(timezone=True), nullable=False),
    Column("time_zone", String(64), nullable=False),
    # Reschedule offers only: the offered start times (UTC, option 1 first) and when the
    # offer lapses. Times, not PHI; `start_at` holds option 1 for these rows.
    Column("offer_options", ARRAY(DateTime(timezone=True)), nullable=True),
    Column("offer_expires_at", DateTime(timezone=True), nullable=True),
    # The secure link is one-time: the first action on it (confirm, reschedule, cancel,
    # choose + option number) is kept, and later ones are refused with what was done.
    Column("link_used_at", DateTime(timezone=True), nullable=True),
    Column("link_action", String(16), nullable=True),
    Column("link_choice", Integer, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    # When the provider accepted it: what a reply is matched against. `updated_at` also
    # moves on status callbacks, so a late "delivered" for an older message would make
    # that one look like the latest.
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
# The delivery worker scans only queued messages, by when they are due.
Index(
    "ix_message_due",
    message.c.next_attempt_at,
    postgresql_where=message.c.status == "queued",
)
# The contact budget counts one patient's messages of the last week.
Index("ix_message_patient_created", message.c.org_id, message.c.patient_id, message.c.created_at)
# A link page shows the last link action on its appointment, from any of its messages.
Index(
    "ix_message_link_used",
    message.c.org_id,
    message.c.appointment_id,
    postgresql_where=message.c.link_used_at.is_not(None),
)

opt_out = Table(
    "opt_out",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org_id", String(64), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("recipient_index", String(64), nullable=False),
    Column("opted_out_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("org_id", "channel", "recipient_index", name="uq_opt_out_recipient"),
)

# Saved templates, append-only: every save is a new version and a revert to the default
# is a version with `deleted` set, so the history says who changed what patients were
# told, and when. `location_id` is "" for the organization's default (a NULL would
# escape the unique constraint).
message_template = Table(
    "message_template",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("location_id", String(128), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("language", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("subject", Text, nullable=True),
    Column("body", Text, nullable=True),
    Column("html_body", Text, nullable=True),
    Column("updated_by", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint(
        "org_id",
        "location_id",
        "kind",
        "channel",
        "language",
        "version",
        name="uq_message_template_version",
    ),
)

# The portal inbox: what the patient reads after signing in. Subject and body may hold
# PHI (portal templates may name the provider), so both are stored only encrypted. One
# item per message whatever retries the delivery. No foreign key to `message`: the
# delivery worker holds that row FOR UPDATE while the inbox write commits on its own,
# and the key check would wait for that lock.
inbox_item = Table(
    "inbox_item",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("message_id", String(64), nullable=False, unique=True),
    Column("org_id", String(64), nullable=False),
    Column("patient_id", String(128), nullable=False),
    Column("location_id", String(128), nullable=True),
    # From the message (scheduling's events carry it): a sensitive location's items are
    # shown only to staff whose scope names that location (migration 0006).
    Column("sensitive_location", Boolean, nullable=False, server_default=false()),
    Column("sender_name", String(200), nullable=False),
    Column("subject_ct", LargeBinary, nullable=True),
    Column("body_ct", LargeBinary, nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=False),
    Column("read_at", DateTime(timezone=True), nullable=True),
)
# A patient's inbox, newest first.
Index(
    "ix_inbox_item_patient", inbox_item.c.org_id, inbox_item.c.patient_id, inbox_item.c.delivered_at
)
