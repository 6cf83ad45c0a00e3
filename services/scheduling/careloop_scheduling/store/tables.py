"""Tables of the scheduling database.

Appointments hold ids and times only (no names, no reasons for the visit): the
patient's identity and details stay in the patients service.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Table,
    Time,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from careloop_kit.db import add_platform_tables, service_metadata

metadata = service_metadata()
platform = add_platform_tables(metadata)

# The scheduling view of a location, kept from identity's location events only:
# identity owns locations, and scheduling holds what slot computation, reminders,
# feature switches and the sensitive-location rule need. `changed_at` is the
# `occurred_at` of the event applied last, so an older event never overwrites it.
location = Table(
    "location",
    metadata,
    Column("org_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("time_zone", String(64), nullable=False),
    Column("display_name", String(200), nullable=True),
    Column("sensitive", Boolean, nullable=False, server_default=false()),
    Column("features", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("changed_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Reminder settings per level: `scope_id` is "" for the organization, else the location
# or appointment type id. Each row stores only what its level changes (NULL inherits);
# `touches` maps a touch name to {"enabled", "days_before", "send_time"}.
reminder_setting = Table(
    "reminder_setting",
    metadata,
    Column("org_id", String(64), primary_key=True),
    Column("level", String(32), primary_key=True),
    Column("scope_id", String(64), primary_key=True),
    Column("send_time", Time, nullable=True),
    Column("min_spacing_minutes", Integer, nullable=True),
    Column("quiet_start", Time, nullable=True),
    Column("quiet_end", Time, nullable=True),
    Column("touches", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

provider = Table(
    "provider",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False, index=True),
    Column("display_name", String(200), nullable=False),
    Column("location_ids", ARRAY(String(64)), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

appointment_type = Table(
    "appointment_type",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("duration_minutes", Integer, nullable=False),
    Column("visit_category", String(32), nullable=False),
    Column("patient_kind", String(16), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

availability = Table(
    "availability",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("provider_id", String(64), ForeignKey("provider.id"), nullable=False),
    Column("location_id", String(64), nullable=False),
    Column("weekday", Integer, nullable=False),
    Column("start_time", Time, nullable=False),
    Column("end_time", Time, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index("ix_availability_provider", availability.c.org_id, availability.c.provider_id)

availability_exception = Table(
    "availability_exception",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("provider_id", String(64), ForeignKey("provider.id"), nullable=False),
    Column("location_id", String(64), nullable=True),
    Column("first_day", Date, nullable=False),
    Column("last_day", Date, nullable=False),
    Column("reason", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index(
    "ix_availability_exception_provider",
    availability_exception.c.org_id,
    availability_exception.c.provider_id,
)

appointment = Table(
    "appointment",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("provider_id", String(64), ForeignKey("provider.id"), nullable=False),
    Column("location_id", String(64), nullable=False),
    Column("appointment_type_id", String(64), ForeignKey("appointment_type.id"), nullable=False),
    Column("start_at", DateTime(timezone=True), nullable=False),
    Column("end_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("confirmation", String(16), nullable=False),
    Column("rescheduled_from_id", String(64), nullable=True),
    Column("rescheduled_to_id", String(64), nullable=True),
    Column("cancel_reason", String(200), nullable=True),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_appointment_patient", appointment.c.org_id, appointment.c.patient_id)
Index("ix_appointment_provider_start", appointment.c.provider_id, appointment.c.start_at)
# The exclusion constraint `ex_appointment_no_double_booking` (btree_gist) is created by
# migration 0001: SQLAlchemy Core cannot declare it portably, and only PostgreSQL runs it.
NO_DOUBLE_BOOKING = "ex_appointment_no_double_booking"

# An appointment's pending reminder timers are found by key prefix ("<appointment_id>:")
# when it is cancelled or moved; text_pattern_ops lets LIKE 'prefix%' use the index.
Index(
    "ix_durable_timer_dedup_key_prefix",
    platform.timer.c.dedup_key,
    postgresql_ops={"dedup_key": "text_pattern_ops"},
    postgresql_where=platform.timer.c.fired_at.is_(None) & platform.timer.c.cancelled_at.is_(None),
)

# Options offered to a patient who replied `R`: start times (UTC ISO strings, option 1
# first), valid until `expires_at`; `status` open -> used (a numbered reply rebooked the
# visit) or expired (timed out, or replaced by a newer offer). Slots are held for no one.
reschedule_offer = Table(
    "reschedule_offer",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("appointment_id", String(64), ForeignKey("appointment.id"), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("options", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
)
Index(
    "ix_reschedule_offer_appointment",
    reschedule_offer.c.org_id,
    reschedule_offer.c.appointment_id,
    reschedule_offer.c.created_at,
)

# The waitlist (domain/waitlist.py). An entry holds ids, a date window and preferences
# only; `position` (an identity column) is the waitlist order, first in first offered.
waitlist_entry = Table(
    "waitlist_entry",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("location_id", String(64), nullable=False),
    Column("appointment_type_id", String(64), ForeignKey("appointment_type.id"), nullable=False),
    Column("provider_id", String(64), ForeignKey("provider.id"), nullable=True),
    Column("earliest_date", Date, nullable=False),
    Column("latest_date", Date, nullable=False),
    Column("weekdays", ARRAY(Integer), nullable=True),
    Column("parts_of_day", ARRAY(String(16)), nullable=True),
    Column("appointment_id", String(64), ForeignKey("appointment.id"), nullable=True),
    Column("status", String(16), nullable=False),
    Column("booked_appointment_id", String(64), nullable=True),
    Column("position", BigInteger, Identity(always=True), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
# A freed time is matched against one location's waiting entries of one type, in order.
Index(
    "ix_waitlist_entry_match",
    waitlist_entry.c.org_id,
    waitlist_entry.c.location_id,
    waitlist_entry.c.appointment_type_id,
    waitlist_entry.c.position,
    postgresql_where=waitlist_entry.c.status == "waiting",
)
Index("ix_waitlist_entry_patient", waitlist_entry.c.org_id, waitlist_entry.c.patient_id)

# A time freed by a cancellation or a reschedule, offered in rounds. One row per freed
# appointment (`source_appointment_id` unique), so the cancellation and the reschedule
# event of one move open it once.
waitlist_slot = Table(
    "waitlist_slot",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("provider_id", String(64), nullable=False),
    Column("location_id", String(64), nullable=False),
    Column("appointment_type_id", String(64), nullable=False),
    Column("start_at", DateTime(timezone=True), nullable=False),
    Column("end_at", DateTime(timezone=True), nullable=False),
    Column("source_appointment_id", String(64), nullable=False, unique=True),
    Column("source_patient_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("round", Integer, nullable=False),
    Column("filled_by_entry_id", String(64), nullable=True),
    Column("appointment_id", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

waitlist_offer = Table(
    "waitlist_offer",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("slot_id", String(64), ForeignKey("waitlist_slot.id"), nullable=False),
    Column("entry_id", String(64), ForeignKey("waitlist_entry.id"), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("round", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("closed_at", DateTime(timezone=True), nullable=True),
)
Index("ix_waitlist_offer_slot", waitlist_offer.c.slot_id, waitlist_offer.c.status)
Index("ix_waitlist_offer_entry", waitlist_offer.c.entry_id, waitlist_offer.c.status)
