"""The one way to reach the tasks tables: `repositories(session)`, one repository per
aggregate, all on the caller's session (and so in its transaction)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from careloop_tasks.store.queues import QueueRepository
from careloop_tasks.store.rules import RuleSetRepository
from careloop_tasks.store.tasks import TaskRepository


@dataclass(frozen=True)
class Repositories:
    tasks: TaskRepository
    queues: QueueRepository
    rules: RuleSetRepository


def repositories(session: AsyncSession) -> Repositories:
    """Every repository on the caller's session."""
    return Repositories(
        tasks=TaskRepository(session),
        queues=QueueRepository(session),
        rules=RuleSetRepository(session),
    )
