"""Tables of the care-gaps database.

A birth date and sex, a clinical fact and a gap's evidence are PHI, so they are held
only as ciphertext (the kit's field port, data keys in `field_key` wrapped by the
transit key `careloop-caregaps-fields`). Ids, measure ids, statuses, due dates and
reason codes stay in the clear: the population view counts and filters on them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from careloop_kit.db import add_platform_tables, service_metadata
from careloop_kit.fields import add_field_key_table

metadata = service_metadata()
platform = add_platform_tables(metadata)
field_key = add_field_key_table(metadata)

# Every patient care-gaps has heard of (registered, a fact, a visit): the population an
# evaluation job walks. Demographics are null until patients answered the read.
patient_profile = Table(
    "patient_profile",
    metadata,
    Column("org_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("demographics_ct", LargeBinary, nullable=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("org_id", "patient_id", name="pk_patient_profile"),
)

# The facts patients published, normalized (codes, dates, quantities, status, kind),
# one row per fact id at its latest version: a redelivery or an older version is a no-op.
clinical_fact = Table(
    "clinical_fact",
    metadata,
    Column("fact_id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("fact_ct", LargeBinary, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_clinical_fact_patient", clinical_fact.c.org_id, clinical_fact.c.patient_id)

# The care relationship a gap is attributed through: the latest booked or attended visit.
attribution = Table(
    "attribution",
    metadata,
    Column("org_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("location_id", String(64), nullable=False),
    Column("provider_id", String(64), nullable=False),
    Column("appointment_id", String(64), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("org_id", "patient_id", name="pk_attribution"),
)
Index("ix_attribution_location", attribution.c.org_id, attribution.c.location_id)

care_gap = Table(
    "care_gap",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("measure_id", String(64), nullable=False),
    Column("measure_version", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("due_on", Date, nullable=True),
    Column("reason", String(64), nullable=False),
    Column("location_id", String(64), nullable=True),
    Column("provider_id", String(64), nullable=True),
    Column("by_hand", Boolean, nullable=False),
    Column("appointment_id", String(64), nullable=True),
    # The gap of the measure's current care cycle; earlier cycles' gaps stay as history.
    Column("is_current", Boolean, nullable=False),
    Column("evidence_ct", LargeBinary, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index(
    "uq_care_gap_current",
    care_gap.c.org_id,
    care_gap.c.patient_id,
    care_gap.c.measure_id,
    unique=True,
    postgresql_where=text("is_current"),
)
Index(
    "ix_care_gap_population",
    care_gap.c.org_id,
    care_gap.c.measure_id,
    care_gap.c.status,
    care_gap.c.location_id,
)

# Every status a gap went through, with its cause and who caused it.
gap_transition = Table(
    "gap_transition",
    metadata,
    Column("seq", BigInteger, Identity(always=True), primary_key=True),
    Column("gap_id", String(64), nullable=False),
    Column("org_id", String(64), nullable=False),
    Column("from_status", String(16), nullable=True),
    Column("to_status", String(16), nullable=False),
    Column("gap_version", Integer, nullable=False),
    Column("cause", String(32), nullable=True),
    Column("actor_id", String(200), nullable=False),
    # A reason typed by staff may name anything: sealed.
    Column("reason_ct", LargeBinary, nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
)
Index("ix_gap_transition_gap", gap_transition.c.org_id, gap_transition.c.gap_id)

# The appointment types whose booking marks a measure's open gaps scheduled.
measure_visit_type = Table(
    "measure_visit_type",
    metadata,
    Column("org_id", String(64), nullable=False),
    Column("measure_id", String(64), nullable=False),
    Column("appointment_type_id", String(64), nullable=False),
    Column("updated_by", String(200), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint(
        "org_id", "measure_id", "appointment_type_id", name="pk_measure_visit_type"
    ),
)

# Population evaluations: durable, each batch done under the job row's lock by whichever
# replica takes it, the cursor committed with the batch so a restart resumes there.
evaluation_job = Table(
    "evaluation_job",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("location_id", String(64), nullable=True),
    Column("status", String(16), nullable=False),
    Column("total", Integer, nullable=False),
    Column("done", Integer, nullable=False),
    Column("changed", Integer, nullable=False),
    Column("cursor", String(64), nullable=True),
    Column("as_of", Date, nullable=False),
    Column("requested_by", String(200), nullable=False),
    Column("error", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
)
Index("ix_evaluation_job_status", evaluation_job.c.status, evaluation_job.c.created_at)

# Care-gaps' view of identity's locations: which are sensitive (only their own staff see
# the gaps attributed there), and the name and zone an outreach message needs.
location_view = Table(
    "location_view",
    metadata,
    Column("org_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("sensitive", Boolean, nullable=False),
    # Null for a row kept before the view held them: the next location event fills them.
    Column("name", String(200), nullable=True),
    Column("time_zone", String(64), nullable=True),
    Column("changed_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Outreach campaigns: which measures at which location, and the channel sequence. No PHI:
# the patients a campaign reaches are in `campaign_outreach`.
campaign = Table(
    "campaign",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("location_id", String(64), nullable=False),
    Column("measure_ids", JSONB, nullable=False),
    # [{"channel": "sms" | "email" | "portal" | null, "wait_days": int}, ...]
    Column("steps", JSONB, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("launched_at", DateTime(timezone=True), nullable=True),
    Column("launched_by", String(200), nullable=True),
    Column("stopped_at", DateTime(timezone=True), nullable=True),
)
Index("ix_campaign_org", campaign.c.org_id, campaign.c.created_at)

# One row per campaign x patient: the step last requested and whether the chain still
# runs. The primary key is what makes a second launch send nothing twice.
campaign_outreach = Table(
    "campaign_outreach",
    metadata,
    Column("campaign_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("org_id", String(64), nullable=False),
    Column("step", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("respond_by", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("campaign_id", "patient_id", name="pk_campaign_outreach"),
)
Index(
    "ix_campaign_outreach_patient",
    campaign_outreach.c.org_id,
    campaign_outreach.c.patient_id,
    campaign_outreach.c.status,
)
