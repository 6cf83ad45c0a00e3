"""tasks, comments, queue members and cursors, rule sets, field keys, outbox, inbox, timers

Revision ID: 0001
Revises:
Create Date: 2026-12-07 15:40:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from careloop_kit.db.platform_schema import create_platform_tables_v1, drop_platform_tables_v1
from careloop_kit.fields import create_field_key_table_v1, drop_field_key_table_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_platform_tables_v1()
    create_field_key_table_v1()
    op.create_table(
        "task",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("subject_kind", sa.String(length=32), nullable=True),
        sa.Column("subject_id", sa.String(length=64), nullable=True),
        sa.Column("dedup_key", sa.String(length=400), nullable=True),
        sa.Column("rule_id", sa.String(length=64), nullable=True),
        sa.Column("assignee_id", sa.String(length=200), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("overdue_notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("note_ct", sa.LargeBinary(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task")),
        sa.UniqueConstraint("org_id", "dedup_key", name="uq_task_dedup_key"),
    )
    op.create_index(
        "ix_task_location_status", "task", ["org_id", "location_id", "status"], unique=False
    )
    op.create_index(
        "ix_task_assignee_status", "task", ["org_id", "assignee_id", "status"], unique=False
    )
    op.create_index("ix_task_patient", "task", ["org_id", "patient_id"], unique=False)
    op.create_index(
        "ix_task_subject", "task", ["org_id", "subject_kind", "subject_id"], unique=False
    )
    op.create_table(
        "task_comment",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("author_id", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body_ct", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["task.id"], name=op.f("fk_task_comment_task_id_task")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_comment")),
        sa.UniqueConstraint("seq", name=op.f("uq_task_comment_seq")),
    )
    op.create_index("ix_task_comment_task", "task_comment", ["task_id"], unique=False)
    op.create_table(
        "queue_member",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=200), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("added_by", sa.String(length=200), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "queue", "user_id", name="pk_queue_member"),
    )
    op.create_table(
        "queue_cursor",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=200), nullable=False),
        sa.Column("last_user_id", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "queue", name="pk_queue_cursor"),
    )
    op.create_table(
        "task_rule_set",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("document", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_task_rule_set")),
    )


def downgrade() -> None:
    op.drop_table("task_rule_set")
    op.drop_table("queue_cursor")
    op.drop_table("queue_member")
    op.drop_index("ix_task_comment_task", table_name="task_comment")
    op.drop_table("task_comment")
    op.drop_index("ix_task_subject", table_name="task")
    op.drop_index("ix_task_patient", table_name="task")
    op.drop_index("ix_task_assignee_status", table_name="task")
    op.drop_index("ix_task_location_status", table_name="task")
    op.drop_table("task")
    drop_field_key_table_v1()
    drop_platform_tables_v1()
