"""An organization's own rule set (none: the shipped defaults apply)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from careloop_kit.repository import Repository
from careloop_tasks.store.tables import task_rule_set


@dataclass(frozen=True)
class StoredRuleSet:
    document: dict[str, Any]
    version: int
    updated_by: str
    updated_at: datetime


class RuleSetRepository(Repository):
    async def get(self, org_id: str) -> StoredRuleSet | None:
        row = (
            await self._session.execute(
                select(task_rule_set).where(task_rule_set.c.org_id == org_id)
            )
        ).first()
        if row is None:
            return None
        return StoredRuleSet(dict(row.document), row.version, row.updated_by, row.updated_at)

    async def put(
        self, org_id: str, document: dict[str, Any], *, updated_by: str, at: datetime
    ) -> int:
        """Store the organization's set; its new version."""
        statement = pg_insert(task_rule_set).values(
            org_id=org_id, document=document, version=1, updated_by=updated_by, updated_at=at
        )
        statement = statement.on_conflict_do_update(
            index_elements=["org_id"],
            set_={
                "document": statement.excluded.document,
                "version": task_rule_set.c.version + 1,
                "updated_by": statement.excluded.updated_by,
                "updated_at": statement.excluded.updated_at,
            },
        )
        version: int = await self._session.scalar(statement.returning(task_rule_set.c.version))
        return version
