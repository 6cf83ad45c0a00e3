"""Campaigns and their per-patient outreach rows."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects.postgresql import insert

from careloop_caregaps.domain.campaign import Campaign, OutreachStatus, Step
from careloop_caregaps.store.tables import campaign, campaign_outreach, care_gap
from careloop_kit.repository import Repository


@dataclass(frozen=True)
class Outreach:
    campaign_id: str
    patient_id: str
    org_id: str
    step: int
    status: OutreachStatus
    respond_by: datetime


@dataclass(frozen=True)
class CampaignCounts:
    patients_targeted: int = 0
    steps_sent: int = 0
    waiting: int = 0
    scheduled: int = 0
    closed: int = 0
    unanswered: int = 0
    stopped: int = 0


def _campaign(row: Any) -> Campaign:
    return Campaign(
        id=row.id,
        org_id=row.org_id,
        name=row.name,
        location_id=row.location_id,
        measure_ids=tuple(row.measure_ids),
        steps=tuple(Step(s["channel"], int(s["wait_days"])) for s in row.steps),
        status=row.status,
        created_by=row.created_by,
        created_at=row.created_at,
        launched_at=row.launched_at,
        launched_by=row.launched_by,
        stopped_at=row.stopped_at,
    )


def _outreach(row: Any) -> Outreach:
    return Outreach(
        row.campaign_id, row.patient_id, row.org_id, row.step, row.status, row.respond_by
    )


class CampaignRepository(Repository):
    async def add(self, found: Campaign) -> None:
        await self._session.execute(
            campaign.insert().values(
                id=found.id,
                org_id=found.org_id,
                name=found.name,
                location_id=found.location_id,
                measure_ids=list(found.measure_ids),
                steps=[{"channel": s.channel, "wait_days": s.wait_days} for s in found.steps],
                status=found.status,
                created_by=found.created_by,
                created_at=found.created_at,
                launched_at=found.launched_at,
                launched_by=found.launched_by,
                stopped_at=found.stopped_at,
            )
        )

    async def get(
        self, org_id: str, campaign_id: str, *, for_update: bool = False
    ) -> Campaign | None:
        query = select(campaign).where(campaign.c.org_id == org_id, campaign.c.id == campaign_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return None if row is None else _campaign(row)

    async def listing(self, org_id: str, locations: Collection[str] | None) -> list[Campaign]:
        query = select(campaign).where(campaign.c.org_id == org_id)
        if locations is not None:
            query = query.where(campaign.c.location_id.in_(list(locations)))
        rows = await self._session.execute(query.order_by(campaign.c.created_at.desc()))
        return [_campaign(row) for row in rows]

    async def mark(self, org_id: str, campaign_id: str, **values: Any) -> None:
        await self._session.execute(
            update(campaign)
            .where(campaign.c.org_id == org_id, campaign.c.id == campaign_id)
            .values(**values)
        )

    async def targets(
        self, org_id: str, location_id: str, measure_ids: Collection[str]
    ) -> list[str]:
        """Patients with a current open gap of one of `measure_ids` attributed there."""
        rows = await self._session.scalars(
            select(care_gap.c.patient_id)
            .where(
                care_gap.c.org_id == org_id,
                care_gap.c.location_id == location_id,
                care_gap.c.measure_id.in_(list(measure_ids)),
                care_gap.c.is_current.is_(True),
                care_gap.c.status == "open",
            )
            .distinct()
            .order_by(care_gap.c.patient_id)
        )
        return list(rows)

    async def add_outreach(self, row: Outreach, now: datetime) -> bool:
        """The patient's outreach row; False when the campaign reached them already."""
        statement = (
            insert(campaign_outreach)
            .values(
                campaign_id=row.campaign_id,
                patient_id=row.patient_id,
                org_id=row.org_id,
                step=row.step,
                status=row.status,
                respond_by=row.respond_by,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["campaign_id", "patient_id"])
            .returning(campaign_outreach.c.campaign_id)
        )
        return (await self._session.execute(statement)).first() is not None

    async def outreach(self, campaign_id: str, patient_id: str) -> Outreach | None:
        """The row, locked: a timer and a booking for one patient take turns."""
        row = (
            await self._session.execute(
                select(campaign_outreach)
                .where(
                    campaign_outreach.c.campaign_id == campaign_id,
                    campaign_outreach.c.patient_id == patient_id,
                )
                .with_for_update()
            )
        ).first()
        return None if row is None else _outreach(row)

    async def set_outreach(
        self,
        campaign_id: str,
        patient_id: str,
        *,
        status: OutreachStatus,
        now: datetime,
        step: int | None = None,
        respond_by: datetime | None = None,
    ) -> None:
        values: dict[str, Any] = {"status": status, "updated_at": now}
        if step is not None:
            values["step"] = step
        if respond_by is not None:
            values["respond_by"] = respond_by
        await self._session.execute(
            update(campaign_outreach)
            .where(
                campaign_outreach.c.campaign_id == campaign_id,
                campaign_outreach.c.patient_id == patient_id,
            )
            .values(**values)
        )

    async def waiting_of_patient(
        self, org_id: str, patient_id: str
    ) -> list[tuple[Outreach, tuple[str, ...]]]:
        """The patient's running outreach, each with its campaign's measures, locked."""
        rows = await self._session.execute(
            select(campaign_outreach, campaign.c.measure_ids)
            .join(campaign, campaign.c.id == campaign_outreach.c.campaign_id)
            .where(
                campaign_outreach.c.org_id == org_id,
                campaign_outreach.c.patient_id == patient_id,
                campaign_outreach.c.status == "waiting",
            )
            .with_for_update(of=campaign_outreach)
        )
        return [(_outreach(row), tuple(row.measure_ids)) for row in rows]

    async def stop_waiting(self, campaign_id: str, now: datetime) -> list[Outreach]:
        """Every running outreach of the campaign stopped; the rows as they were."""
        rows = await self._session.execute(
            update(campaign_outreach)
            .where(
                campaign_outreach.c.campaign_id == campaign_id,
                campaign_outreach.c.status == "waiting",
            )
            .values(status="stopped", updated_at=now)
            .returning(campaign_outreach)
        )
        return [_outreach(row) for row in rows]

    async def counts(self, campaign_ids: Collection[str]) -> dict[str, CampaignCounts]:
        if not campaign_ids:
            return {}
        status = campaign_outreach.c.status

        def count(name: str) -> Any:
            return func.count(case((status == name, 1)))

        rows = await self._session.execute(
            select(
                campaign_outreach.c.campaign_id,
                func.count(),
                func.coalesce(func.sum(campaign_outreach.c.step), 0),
                count("waiting"),
                count("scheduled"),
                count("closed"),
                count("unanswered"),
                count("stopped"),
            )
            .where(campaign_outreach.c.campaign_id.in_(list(campaign_ids)))
            .group_by(campaign_outreach.c.campaign_id)
        )
        return {row[0]: CampaignCounts(*(int(v) for v in row[1:])) for row in rows}
