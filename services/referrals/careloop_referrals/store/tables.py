"""Tables of the referrals database. The referral's clinical reason, every free-text
transition reason and the authorization number hold only ciphertext (the kit's field
port, data keys in `field_key` wrapped by the transit key `careloop-referrals-fields`)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
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

# The directory of referring and receiving providers and organizations, inside and
# outside the practice. Names, NPIs and practice contacts are not PHI.
directory_entry = Table(
    "directory_entry",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("npi", String(10), nullable=True),
    Column("name", String(200), nullable=False),
    Column("specialty", String(100), nullable=True),
    Column("contact", JSONB, nullable=False),
    Column("preferred_channel", String(16), nullable=False),
    Column("internal", Boolean, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("org_id", "npi", name="uq_directory_entry_npi"),
)

referral = Table(
    "referral",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("location_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("direction", String(16), nullable=False),
    Column("urgency", String(16), nullable=False),
    Column("referring_provider_id", String(64), ForeignKey("directory_entry.id"), nullable=False),
    Column("receiving_provider_id", String(64), ForeignKey("directory_entry.id"), nullable=True),
    Column("stage", String(32), nullable=False),
    Column("stage_entered_at", DateTime(timezone=True), nullable=False),
    Column("appointment_id", String(64), nullable=True),
    Column("source", String(16), nullable=False),
    Column("reason_ct", LargeBinary, nullable=True),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_referral_location_stage", referral.c.org_id, referral.c.location_id, referral.c.stage)
Index("ix_referral_patient", referral.c.org_id, referral.c.patient_id)
Index("ix_referral_appointment", referral.c.org_id, referral.c.appointment_id)

# Every step of every referral, kept for ever: the history, the clocks and the figures.
referral_transition = Table(
    "referral_transition",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("seq", BigInteger, Identity(always=True), nullable=False, unique=True),
    Column("referral_id", String(64), ForeignKey("referral.id"), nullable=False),
    Column("org_id", String(64), nullable=False),
    Column("from_stage", String(32), nullable=True),
    Column("to_stage", String(32), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("reason_ct", LargeBinary, nullable=True),
)
Index("ix_referral_transition_referral", referral_transition.c.referral_id)

# A referral's prior authorization, changed in place under its own version. The number
# identifies the patient's coverage, so it is sealed; the payer's name is kept plain for
# the figures per payer.
referral_authorization = Table(
    "referral_authorization",
    metadata,
    Column("referral_id", String(64), ForeignKey("referral.id"), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("payer", String(200), nullable=False),
    Column("number_ct", LargeBinary, nullable=True),
    Column("status", String(16), nullable=False),
    Column("approved_visits", Integer, nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("visits_used", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(200), nullable=False),
    Column("version", Integer, nullable=False),
)

# The appointments counted against an authorization: one row per visit, so an arrival
# delivered twice is one visit used.
authorization_visit = Table(
    "authorization_visit",
    metadata,
    Column("referral_id", String(64), ForeignKey("referral.id"), primary_key=True),
    Column("appointment_id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("counted_at", DateTime(timezone=True), nullable=False),
)

# The outcome report of an inbound referral: the note (sealed) and its delivery to the
# referring provider, retried by a durable timer until the channel accepts or refuses it.
referral_outcome = Table(
    "referral_outcome",
    metadata,
    Column("referral_id", String(64), ForeignKey("referral.id"), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("note_ct", LargeBinary, nullable=False),
    Column("author", String(200), nullable=False),
    Column("written_at", DateTime(timezone=True), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("provider_id", String(200), nullable=True),
    Column("last_error", String(200), nullable=True),
)

# Stage clocks an organization (`location_id` empty) or one of its locations sets,
# per urgency and stage; what a layer leaves out it inherits (`domain.clocks`).
clock_setting = Table(
    "clock_setting",
    metadata,
    Column("org_id", String(64), primary_key=True),
    Column("location_id", String(64), primary_key=True),
    Column("urgency", String(16), primary_key=True),
    Column("stage", String(32), primary_key=True),
    Column("stall_after_s", Integer, nullable=False),
    Column("escalate_after_s", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(200), nullable=False),
)

# The documents of a referral packet: the content and the file name sealed (a file name
# often names the patient), the media type and size plain for listing.
referral_document = Table(
    "referral_document",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("referral_id", String(64), ForeignKey("referral.id"), nullable=False),
    Column("org_id", String(64), nullable=False),
    Column("content_type", String(100), nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("filename_ct", LargeBinary, nullable=True),
    Column("content_ct", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
)
Index("ix_referral_document_referral", referral_document.c.org_id, referral_document.c.referral_id)

# Referrals' view of identity's locations: what a message to the patient needs (the
# name the practice goes by there, its zone, whether it is sensitive).
location_view = Table(
    "location_view",
    metadata,
    Column("org_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("time_zone", String(64), nullable=False),
    Column("sensitive", Boolean, nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
