"""The organization's task rules and its queues' members (`tasks:manage`; no PHI)."""

from __future__ import annotations

from fastapi import APIRouter

from careloop_tasks.api.common import ManageContext
from careloop_tasks.api.schemas import IdStr, QueueMembers, RoleStr, RuleSetRead, RuleSetWrite
from careloop_tasks.domain.task import queue_name
from careloop_tasks.usecases import queues, rules
from careloop_tasks.usecases.rules import RulesView

router = APIRouter(prefix="/tasks", tags=["task administration"])


def _rules(view: RulesView) -> RuleSetRead:
    return RuleSetRead(
        rules=view.document["rules"],
        version=view.version,
        updated_by=view.updated_by,
        updated_at=view.updated_at,
    )


@router.get("/rules", response_model=RuleSetRead)
async def read_rules(ctx: ManageContext) -> RuleSetRead:
    """The rules that make tasks from events (the shipped defaults until you save yours)."""
    return _rules(await rules.read_rules(ctx))


@router.put("/rules", response_model=RuleSetRead)
async def replace_rules(body: RuleSetWrite, ctx: ManageContext) -> RuleSetRead:
    """Replace your organization's rules (checked before they are saved)."""
    return _rules(await rules.replace_rules(ctx, body.model_dump()))


@router.get("/queues/{role}/{location_id}/members", response_model=QueueMembers)
async def queue_members(role: RoleStr, location_id: IdStr, ctx: ManageContext) -> QueueMembers:
    """The staff users who work a queue."""
    members = await queues.queue_members(ctx, role, location_id)
    return QueueMembers(queue=queue_name(role, location_id), members=members)


@router.put("/queues/{role}/{location_id}/members/{user_id}", response_model=QueueMembers)
async def add_queue_member(
    role: RoleStr, location_id: IdStr, user_id: IdStr, ctx: ManageContext
) -> QueueMembers:
    """Add a staff user to a queue."""
    members = await queues.add_queue_member(ctx, role, location_id, user_id)
    return QueueMembers(queue=queue_name(role, location_id), members=members)


@router.delete("/queues/{role}/{location_id}/members/{user_id}", response_model=QueueMembers)
async def remove_queue_member(
    role: RoleStr, location_id: IdStr, user_id: IdStr, ctx: ManageContext
) -> QueueMembers:
    """Take a staff user off a queue."""
    members = await queues.remove_queue_member(ctx, role, location_id, user_id)
    return QueueMembers(queue=queue_name(role, location_id), members=members)
