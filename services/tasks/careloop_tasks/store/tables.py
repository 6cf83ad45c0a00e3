"""Tables of the tasks database. Comments and hand-written notes may hold PHI, so they
hold only ciphertext (the kit's field port, data keys in `field_key` wrapped by the
transit key `careloop-tasks-fields`); titles come from templates and hold none."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
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

task = Table(
    "task",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("location_id", String(64), nullable=False),
    Column("queue", String(200), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("title", String(200), nullable=False),
    Column("priority", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("patient_id", String(64), nullable=True),
    Column("subject_kind", String(32), nullable=True),
    Column("subject_id", String(64), nullable=True),
    # Rule, subject and the rule's fields: one task per key, whatever is redelivered.
    Column("dedup_key", String(400), nullable=True),
    Column("rule_id", String(64), nullable=True),
    Column("assignee_id", String(200), nullable=True),
    Column("outcome", String(32), nullable=True),
    Column("escalated_at", DateTime(timezone=True), nullable=True),
    Column("overdue_notified_at", DateTime(timezone=True), nullable=True),
    Column("note_ct", LargeBinary, nullable=True),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("org_id", "dedup_key", name="uq_task_dedup_key"),
)
Index("ix_task_location_status", task.c.org_id, task.c.location_id, task.c.status)
Index("ix_task_assignee_status", task.c.org_id, task.c.assignee_id, task.c.status)
Index("ix_task_patient", task.c.org_id, task.c.patient_id)
Index("ix_task_subject", task.c.org_id, task.c.subject_kind, task.c.subject_id)

task_comment = Table(
    "task_comment",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("seq", BigInteger, Identity(always=True), nullable=False, unique=True),
    Column("task_id", String(64), ForeignKey("task.id"), nullable=False),
    Column("org_id", String(64), nullable=False),
    Column("author_id", String(200), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("body_ct", LargeBinary, nullable=False),
)
Index("ix_task_comment_task", task_comment.c.task_id)

# Staff users who work a queue (its role at its location), managed by staff admins.
queue_member = Table(
    "queue_member",
    metadata,
    Column("org_id", String(64), nullable=False),
    Column("queue", String(200), nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("added_by", String(200), nullable=False),
    Column("added_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("org_id", "queue", "user_id", name="pk_queue_member"),
)

# Whose turn it was last in each queue: the round-robin's place, locked while assigning.
queue_cursor = Table(
    "queue_cursor",
    metadata,
    Column("org_id", String(64), nullable=False),
    Column("queue", String(200), nullable=False),
    Column("last_user_id", String(200), nullable=False),
    PrimaryKeyConstraint("org_id", "queue", name="pk_queue_cursor"),
)

# An organization's own rules, replacing the shipped defaults (no row: the defaults).
task_rule_set = Table(
    "task_rule_set",
    metadata,
    Column("org_id", String(64), primary_key=True),
    Column("document", JSONB, nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_by", String(200), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
