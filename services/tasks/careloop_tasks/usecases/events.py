"""What every change to a task publishes, the same way from every door: the event
snapshot and its routing."""

from __future__ import annotations

from datetime import datetime

from careloop_tasks.domain.task import Task


def event_fields(t: Task, at: datetime) -> dict[str, object]:
    """The snapshot every task event carries (ids and codes: the title, a template's
    output, is left out too, so no free text travels)."""
    return {
        "task_id": t.id,
        "org_id": t.org_id,
        "location_id": t.location_id,
        "queue": t.queue,
        "kind": t.kind,
        "priority": t.priority.value,
        "status": t.status.value,
        "patient_id": t.patient_id,
        "subject_kind": t.subject_kind,
        "subject_id": t.subject_id,
        "assignee_id": t.assignee_id,
        "due_at": t.due_at,
        "version": t.version,
        "occurred_at": at,
    }


def routing(t: Task) -> dict[str, str]:
    """Envelope routing of a task's events: its tenant, location and id."""
    return {"org_id": t.org_id, "location_id": t.location_id, "subject": t.id}
