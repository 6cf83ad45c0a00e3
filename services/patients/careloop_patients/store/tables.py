"""Tables of the patients database. PHI columns hold only ciphertext."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from careloop_kit.db import add_platform_tables, service_metadata

metadata = service_metadata()
platform = add_platform_tables(metadata)

# Columns encrypted with the patient's data key (associated data binds each to its row).
ENCRYPTED_COLUMNS = (
    "name",
    "birth_date",
    "sex",
    "phones",
    "emails",
    "address",
    "preferred_language",
    "preferences",
)

patient_key = Table(
    "patient_key",
    metadata,
    Column("dek_id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("kek_name", String(100), nullable=False),
    Column("wrapped", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

patient = Table(
    "patient",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False, index=True),
    Column("location_id", String(64), nullable=True),
    Column("status", String(16), nullable=False),
    Column("merged_into_id", String(64), nullable=True),
    Column("version", Integer, nullable=False),
    Column("dek_id", String(64), ForeignKey("patient_key.dek_id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    *(Column(f"{name}_ct", LargeBinary, nullable=True) for name in ENCRYPTED_COLUMNS),
)

patient_lookup = Table(
    "patient_lookup",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org_id", String(64), nullable=False),
    Column("patient_id", String(64), ForeignKey("patient.id"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("token", String(64), nullable=False),
    Column("index_version", Integer, nullable=False),
)
Index(
    "ix_patient_lookup_token",
    patient_lookup.c.org_id,
    patient_lookup.c.kind,
    patient_lookup.c.token,
)

# Why staff of a location other than the patient's home may reach the record: one row per
# source (an appointment today; a referral or a care gap later), open while ended_at is null.
care_relationship = Table(
    "care_relationship",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("patient_id", String(64), ForeignKey("patient.id"), nullable=False),
    Column("location_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("source_id", String(64), nullable=False),
    Column("since", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    Column("end_reason", String(32), nullable=True),
    UniqueConstraint("org_id", "kind", "source_id", name="uq_care_relationship_source"),
)
Index(
    "ix_care_relationship_open",
    care_relationship.c.org_id,
    care_relationship.c.patient_id,
    care_relationship.c.location_id,
    postgresql_where=text("ended_at IS NULL"),
)

# Patients' view of identity's locations: only what the access check needs. A location
# patients has not heard of is not sensitive, as in scheduling's view.
location_view = Table(
    "location_view",
    metadata,
    Column("org_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("sensitive", Boolean, nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Clinical facts (`domain.facts`): one row per fact, corrected in place (`version`). The
# FHIR resource and the normalized fact are sealed with the patient's data key; a source's
# dedup key is a blind-index token and "same content" a keyed digest, so neither a code, a
# date, a value nor a display is readable in the table.
clinical_facts = Table(
    "clinical_facts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("patient_id", String(64), ForeignKey("patient.id"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("version", Integer, nullable=False),
    Column("source", String(16), nullable=False),
    Column("dedup_token", String(64), nullable=True),
    Column("content_token", String(64), nullable=False),
    Column("index_version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("resource_ct", LargeBinary, nullable=False),
    Column("fact_ct", LargeBinary, nullable=False),
    # The source's id, sealed: a blind-index re-index recomputes the dedup token from it.
    Column("source_key_ct", LargeBinary, nullable=True),
)
Index(
    "ix_clinical_facts_patient",
    clinical_facts.c.org_id,
    clinical_facts.c.patient_id,
    clinical_facts.c.kind,
)
Index(
    "uq_clinical_facts_dedup",
    clinical_facts.c.org_id,
    clinical_facts.c.patient_id,
    clinical_facts.c.dedup_token,
    unique=True,
    postgresql_where=text("dedup_token IS NOT NULL"),
)
