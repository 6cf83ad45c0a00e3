"""Tasks from other services' events, by the organization's rules: a `create` rule
opens one task per dedup key, an `escalate` rule raises that same task to urgent once
(opening it first when the event that should have made it never came).

The kit's consumer runs this in the transaction of its inbox mark, so a redelivered
event is a no-op; the dedup key covers what the inbox cannot see: the same fact sent
again under a new event id, or a replay. Each task made or escalated is audited on its
patient's trail with the service as the actor.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_contracts import Event
from careloop_contracts.tasks import TaskEscalated
from careloop_kit.audit import AuditEntry, recorder_of
from careloop_kit.auth import Principal
from careloop_kit.auth.permissions import CLINICAL
from careloop_kit.repository import new_id
from careloop_kit.service import Runtime
from careloop_tasks.domain.rules import Rule
from careloop_tasks.domain.task import Priority, Status, Task, escalate, queue_name
from careloop_tasks.domain.titles import title_for
from careloop_tasks.store.rules import RuleSetRepository
from careloop_tasks.store.tasks import TaskRepository
from careloop_tasks.usecases.events import event_fields, routing
from careloop_tasks.usecases.lifecycle import open_task
from careloop_tasks.usecases.rules import rules_in_force

log = logging.getLogger(__name__)

SERVICE_ACTOR = "tasks"
RESOURCE = "Task"


async def _audit(runtime: Runtime, session: AsyncSession, task: Task, action: str) -> None:
    system = Principal(actor_id=SERVICE_ACTOR, actor_type="system", org_id=task.org_id)
    entry = AuditEntry(
        action=action,
        resource_type=RESOURCE,
        phi_categories=[CLINICAL],
        patient_id=task.patient_id,
        resource_id=task.id,
    )
    await recorder_of(runtime).record(session, system, entry)


def _task_of(rule: Rule, fields: Mapping[str, Any], runtime: Runtime, key: str) -> Task:
    now = runtime.clock.now()
    location_id = str(fields["location_id"])
    patient = fields.get("patient_id")
    subject = fields.get(rule.subject_field) if rule.subject_field else None
    return Task(
        id=new_id(),
        org_id=str(fields["org_id"]),
        location_id=location_id,
        queue=queue_name(rule.queue_role, location_id),
        kind=rule.kind,
        title=title_for(rule.kind, fields),
        priority=rule.priority,
        status=Status.OPEN,
        due_at=now + rule.due_in.for_event(fields),
        patient_id=None if patient is None else str(patient),
        subject_kind=rule.subject_kind,
        subject_id=None if subject is None else str(subject),
        dedup_key=key,
        rule_id=rule.id,
        assignee_id=None,
        outcome=None,
        escalated_at=None,
        version=1,
        created_at=now,
        updated_at=now,
    )


async def apply_rules(runtime: Runtime, session: AsyncSession, event: Event) -> None:
    """Every rule of the event's organization that the event sets off."""
    fields: dict[str, Any] = event.model_dump(mode="json")
    rules = await rules_in_force(runtime, RuleSetRepository(session), str(fields["org_id"]))
    tasks = TaskRepository(session)
    for rule in rules.for_event(event.event_type, fields):
        creator = rules.creator_of(rule)
        key = creator.dedup_key(fields)
        found = await tasks.by_dedup_key(str(fields["org_id"]), key)
        if found is None:
            found = await open_task(runtime, session, _task_of(creator, fields, runtime, key))
            if found is not None:
                await _audit(runtime, session, found, "create")
            else:  # made by a concurrent delivery between the two statements
                found = await tasks.by_dedup_key(str(fields["org_id"]), key)
        if rule.action == "escalate" and found is not None:
            await _escalate(runtime, tasks, session, found, rule)


async def _escalate(
    runtime: Runtime, tasks: TaskRepository, session: AsyncSession, found: Task, rule: Rule
) -> None:
    now = runtime.clock.now()
    raised = escalate(found, now=now)
    if raised is None:
        return
    await tasks.save(raised, previous_version=found.version)
    await _audit(runtime, session, raised, "update")
    previous: Priority = found.priority
    await runtime.outbox.add(
        session,
        TaskEscalated(
            **event_fields(raised, now), previous_priority=previous.value, rule_id=rule.id
        ),
        **routing(raised),
    )
    log.info("task %s escalated by rule %s", raised.id, rule.id)
