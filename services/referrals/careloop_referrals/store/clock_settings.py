"""The stage clocks organizations and locations set (no PHI). The organization's own
layer is stored under an empty `location_id`."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select

from careloop_kit.repository import Repository
from careloop_referrals.domain.clocks import ClockLayer, StageClock
from careloop_referrals.domain.referral import Stage, Urgency
from careloop_referrals.store.tables import clock_setting

ORGANIZATION = ""


class ClockSettingRepository(Repository):
    async def layers(self, org_id: str, location_id: str) -> tuple[ClockLayer, ClockLayer]:
        """(the organization's layer, the location's layer)."""
        rows = await self._session.execute(
            select(clock_setting).where(
                clock_setting.c.org_id == org_id,
                clock_setting.c.location_id.in_([ORGANIZATION, location_id]),
            )
        )
        org: dict[tuple[Urgency, Stage], StageClock] = {}
        location: dict[tuple[Urgency, Stage], StageClock] = {}
        for row in rows:
            layer = org if row.location_id == ORGANIZATION else location
            layer[(Urgency(row.urgency), Stage(row.stage))] = StageClock(
                timedelta(seconds=row.stall_after_s), timedelta(seconds=row.escalate_after_s)
            )
        return org, location

    async def replace(
        self,
        org_id: str,
        location_id: str | None,
        layer: ClockLayer,
        *,
        actor: str,
        now: datetime,
    ) -> None:
        """Make `layer` the whole of what this level sets (None: the organization)."""
        scope = ORGANIZATION if location_id is None else location_id
        await self._session.execute(
            delete(clock_setting).where(
                clock_setting.c.org_id == org_id, clock_setting.c.location_id == scope
            )
        )
        if layer:
            await self._session.execute(
                insert(clock_setting),
                [
                    {
                        "org_id": org_id,
                        "location_id": scope,
                        "urgency": urgency.value,
                        "stage": stage.value,
                        "stall_after_s": int(clock.stall_after.total_seconds()),
                        "escalate_after_s": int(clock.escalate_after.total_seconds()),
                        "updated_at": now,
                        "updated_by": actor,
                    }
                    for (urgency, stage), clock in layer.items()
                ],
            )
