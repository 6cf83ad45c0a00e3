"""Outcome reports and their delivery state. The note arrives sealed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from careloop_kit.repository import Repository
from careloop_kit.rows import record_of, values_of
from careloop_referrals.domain.directory import Channel
from careloop_referrals.domain.outcome import OutcomeReport, ReportStatus
from careloop_referrals.store.tables import referral_outcome

_ENUMS = {"channel": Channel, "status": ReportStatus}


def report_of(row: Any) -> OutcomeReport:
    return record_of(OutcomeReport, row, convert=_ENUMS)


class OutcomeRepository(Repository):
    async def get(
        self, org_id: str, referral_id: str, *, for_update: bool = False
    ) -> OutcomeReport | None:
        query = select(referral_outcome).where(
            referral_outcome.c.org_id == org_id, referral_outcome.c.referral_id == referral_id
        )
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return None if row is None else report_of(row._mapping)

    async def note_of(self, org_id: str, referral_id: str) -> bytes | None:
        value: bytes | None = await self._session.scalar(
            select(referral_outcome.c.note_ct).where(
                referral_outcome.c.org_id == org_id, referral_outcome.c.referral_id == referral_id
            )
        )
        return value

    async def put(self, report: OutcomeReport, *, note_ct: bytes) -> None:
        """Insert the report with its note, or replace a failed one (a resend)."""
        values = {**values_of(report), "note_ct": note_ct}
        changed = {k: v for k, v in values.items() if k not in ("referral_id", "org_id")}
        await self._session.execute(
            pg_insert(referral_outcome)
            .values(**values)
            .on_conflict_do_update(index_elements=["referral_id"], set_=changed)
        )

    async def save_delivery(self, report: OutcomeReport) -> None:
        """The report's delivery state after an attempt (the note stays)."""
        await self._session.execute(
            update(referral_outcome)
            .where(
                referral_outcome.c.org_id == report.org_id,
                referral_outcome.c.referral_id == report.referral_id,
            )
            .values(**values_of(report, leave_out=("referral_id", "org_id")))
        )
