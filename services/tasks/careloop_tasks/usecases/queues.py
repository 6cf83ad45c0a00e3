"""The members of a queue (staff users with the queue's role at its location), managed
by staff admins of that location. Names of staff, no PHI: not audited as PHI access."""

from __future__ import annotations

from careloop_kit.context import RequestContext
from careloop_tasks.domain.task import queue_name
from careloop_tasks.store.repository import Repositories

Context = RequestContext[Repositories]


async def queue_members(ctx: Context, role: str, location_id: str) -> list[str]:
    ctx.principal.can_access_location(location_id)
    return await ctx.repos.queues.members(ctx.principal.org_id, queue_name(role, location_id))


async def add_queue_member(ctx: Context, role: str, location_id: str, user_id: str) -> list[str]:
    """Add `user_id` to the queue (adding a member twice changes nothing)."""
    principal = ctx.principal
    principal.can_access_location(location_id)
    queue = queue_name(role, location_id)
    await ctx.repos.queues.add_member(
        principal.org_id, queue, user_id, added_by=principal.actor_id, at=ctx.runtime.clock.now()
    )
    return await ctx.repos.queues.members(principal.org_id, queue)


async def remove_queue_member(ctx: Context, role: str, location_id: str, user_id: str) -> list[str]:
    """Take `user_id` off the queue; the tasks they hold stay theirs until reassigned."""
    principal = ctx.principal
    principal.can_access_location(location_id)
    queue = queue_name(role, location_id)
    await ctx.repos.queues.remove_member(principal.org_id, queue, user_id)
    return await ctx.repos.queues.members(principal.org_id, queue)
